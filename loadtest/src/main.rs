//! `glint-loadtest`: load against a running Glint server, for a bounded time, with a report.
//! `run` plays a scenario (TOML file or flags: WHIP/RTMP publishers, WebRTC and HLS viewers,
//! chat clients) with a live progress line, a JSON report and SVG charts; `capacity` adds
//! WebRTC viewers until quality degrades; `viewers` and `chat` are the single-purpose tools.

use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::task::JoinSet;

use loadtest::report::{Report, RunInfo, ServerUsage, ViewerOutcome};
use loadtest::scenario::{
    CapacityConfig, Media, Point, Progress, PublisherKind, PublisherSpec, Scenario,
};
use loadtest::{procfs, rlimit};
use loadtest::{publish, view, PublishConfig, VideoCodec, ViewConfig, ViewerHandle};

/// Most viewers one run may open.
const MAX_VIEWERS: u32 = 1000;
/// Progress line interval on stderr.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);
/// Bound on DELETE + close of all viewers at the end.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(20);
/// File descriptors beyond two per viewer (stdio, publisher, runtime).
const FD_HEADROOM: u64 = 64;
/// HTTP request timeout for signalling.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Parser)]
#[command(
    name = "glint-loadtest",
    version,
    about = "Load-test a Glint server over WHIP/WHEP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Play a scenario: publishers, WebRTC viewers, HLS viewers and chat clients together.
    Run(RunArgs),
    /// Add WebRTC viewers step by step until loss or latency degrade; report the count.
    Capacity(CapacityArgs),
    /// Open many WHEP viewers on one stream for a bounded time and report.
    Viewers(ViewersArgs),
    /// Many chat readers in one room, a few senders at a fixed rate: delivery latency and
    /// server CPU (registers a channel and the senders as users).
    Chat(ChatArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Scenario file (TOML; see docs/benchmarks.md); flags below override it.
    #[arg(long)]
    scenario: Option<std::path::PathBuf>,
    /// Server base URL.
    #[arg(long)]
    server: Option<String>,
    /// Stream the viewers watch.
    #[arg(long)]
    stream: Option<String>,
    /// Seconds to hold once everything is started.
    #[arg(long)]
    duration: Option<u64>,
    /// Sessions started per second.
    #[arg(long)]
    ramp: Option<f64>,
    #[arg(long)]
    webrtc_viewers: Option<usize>,
    #[arg(long)]
    hls_viewers: Option<usize>,
    #[arg(long)]
    chat_clients: Option<usize>,
    /// A WHIP publisher of the clip: STREAM=KEY (repeatable).
    #[arg(long, value_name = "STREAM=KEY")]
    whip_publish: Vec<String>,
    /// An RTMP publisher (ffmpeg, the clip's FLV): STREAM=KEY (repeatable).
    #[arg(long, value_name = "STREAM=KEY")]
    rtmp_publish: Vec<String>,
    /// What WHIP publishers send.
    #[arg(long, value_enum)]
    media: Option<MediaArg>,
    /// Pid of the server, to sample its CPU and RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the JSON report here (default: stdout).
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Write SVG charts of the timeline into this directory.
    #[arg(long)]
    charts: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
struct CapacityArgs {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    #[arg(long, default_value = "demo")]
    stream: String,
    /// Publish the clip over WHIP to the stream with this key first.
    #[arg(long, value_name = "KEY")]
    publish: Option<String>,
    #[arg(long, value_enum, default_value_t = MediaArg::Clip)]
    media: MediaArg,
    /// Viewers added per step.
    #[arg(long, default_value_t = 50)]
    step: usize,
    /// Seconds each step is held (the first 2 let new viewers settle).
    #[arg(long, default_value_t = 10)]
    step_secs: u64,
    #[arg(long, default_value_t = 2000)]
    max_viewers: usize,
    /// Degraded above this video loss (%).
    #[arg(long, default_value_t = 1.0)]
    max_loss: f64,
    /// Degraded above this glass-to-glass p95 (ms).
    #[arg(long, default_value_t = 300.0)]
    max_p95_ms: f64,
    #[arg(long)]
    server_pid: Option<u32>,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    #[arg(long)]
    charts: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum MediaArg {
    Clip,
    Synthetic,
}

impl From<MediaArg> for Media {
    fn from(m: MediaArg) -> Self {
        match m {
            MediaArg::Clip => Media::Clip,
            MediaArg::Synthetic => Media::Synthetic,
        }
    }
}

fn publisher_specs(kind: PublisherKind, pairs: &[String]) -> anyhow::Result<Vec<PublisherSpec>> {
    pairs
        .iter()
        .map(|p| {
            let (stream, key) = p
                .split_once('=')
                .with_context(|| format!("publisher {p:?}: want STREAM=KEY"))?;
            Ok(PublisherSpec {
                kind,
                stream: stream.to_owned(),
                key: key.to_owned(),
            })
        })
        .collect()
}

/// Live progress on stderr, once a second: on a terminal an indicatif bar of sessions up out of
/// `total` with the latest figures beside it; otherwise (CI logs) a plain line every 5 s.
/// Call `finish` on the returned bar (if any) before printing the report.
fn progress(total: u64) -> (Progress, Option<indicatif::ProgressBar>) {
    use std::io::IsTerminal;
    let line = |p: &Point| {
        let f = |v: Option<f64>| v.map_or("—".into(), |v| format!("{v:.0}"));
        format!(
            "webrtc {}  hls {}  pub {}  latency p50/p95 {}/{} ms  loss {} %  rx {:.1} Mbit/s  server CPU {} %",
            p.webrtc_connected,
            p.hls_playing,
            p.publishers_up,
            f(p.latency_p50_ms),
            f(p.latency_p95_ms),
            p.video_loss_pct.map_or("—".into(), |v| format!("{v:.2}")),
            p.webrtc_rx_mbps,
            f(p.server_cpu_pct),
        )
    };
    if !std::io::stderr().is_terminal() {
        let print = Box::new(move |p: &Point| {
            if (p.t as u64).is_multiple_of(5) {
                eprintln!("{:>5.0} s  {}", p.t, line(p));
            }
        });
        return (print, None);
    }
    let bar = indicatif::ProgressBar::new(total.max(1));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len} sessions  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let handle = bar.clone();
    let update = Box::new(move |p: &Point| {
        bar.set_position((p.webrtc_connected + p.hls_playing) as u64);
        bar.set_message(line(p));
    });
    (update, Some(handle))
}

fn finish(bar: Option<indicatif::ProgressBar>) {
    match bar {
        Some(bar) => bar.finish(),
        None => eprintln!(),
    }
}

fn write_outputs(
    json: &impl serde::Serialize,
    json_path: Option<&std::path::Path>,
    charts: Option<&std::path::Path>,
    timeline: &[Point],
) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(json)?;
    match json_path {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => println!("{text}"),
    }
    if let Some(dir) = charts {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, svg) in loadtest::charts::timeline_charts(timeline) {
            std::fs::write(dir.join(name), svg)?;
        }
        eprintln!("charts in {}", dir.display());
    }
    Ok(())
}

async fn run_scenario(args: RunArgs) -> anyhow::Result<()> {
    let mut s = match &args.scenario {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<Scenario>(&text).with_context(|| format!("{}", path.display()))?
        }
        None => Scenario::default(),
    };
    if let Some(v) = args.server {
        s.server = v;
    }
    if let Some(v) = args.stream {
        s.stream = v;
    }
    if let Some(v) = args.duration {
        s.duration_secs = v;
    }
    if let Some(v) = args.ramp {
        s.ramp_per_sec = v;
    }
    if let Some(v) = args.webrtc_viewers {
        s.webrtc_viewers = v;
    }
    if let Some(v) = args.hls_viewers {
        s.hls_viewers = v;
    }
    if let Some(v) = args.chat_clients {
        s.chat_clients = v;
    }
    if let Some(v) = args.media {
        s.media = v.into();
    }
    if let Some(v) = args.server_pid {
        s.server_pid = Some(v);
    }
    s.publishers
        .extend(publisher_specs(PublisherKind::Whip, &args.whip_publish)?);
    s.publishers
        .extend(publisher_specs(PublisherKind::Rtmp, &args.rtmp_publish)?);
    s.validate().map_err(anyhow::Error::msg)?;
    let needed = (s.webrtc_viewers * 2 + s.hls_viewers + s.chat_clients) as u64 + FD_HEADROOM;
    let limit = rlimit::raise_open_files_limit().context("raising the open-files limit")?;
    if limit < needed {
        bail!("open-files limit {limit} is too low for this scenario (~{needed})");
    }
    let (update, bar) = progress((s.webrtc_viewers + s.hls_viewers) as u64);
    let report = loadtest::scenario::run(s, Some(update)).await;
    finish(bar);
    let report = report.map_err(anyhow::Error::msg)?;
    eprint!("{}", report.human());
    write_outputs(
        &report,
        args.json.as_deref(),
        args.charts.as_deref(),
        &report.timeline,
    )?;
    let s = &report.scenario;
    if report.webrtc.connected < s.webrtc_viewers || report.hls.playing < s.hls_viewers {
        bail!("not every viewer connected and played");
    }
    Ok(())
}

async fn run_capacity(args: CapacityArgs) -> anyhow::Result<()> {
    let limit = rlimit::raise_open_files_limit().context("raising the open-files limit")?;
    if limit < args.max_viewers as u64 * 2 + FD_HEADROOM {
        bail!(
            "open-files limit {limit} is too low for {} viewers",
            args.max_viewers
        );
    }
    let cfg = CapacityConfig {
        server: args.server,
        publishers: args
            .publish
            .iter()
            .map(|key| PublisherSpec {
                kind: PublisherKind::Whip,
                stream: args.stream.clone(),
                key: key.clone(),
            })
            .collect(),
        stream: args.stream,
        media: args.media.into(),
        step: args.step,
        step_secs: args.step_secs,
        max_viewers: args.max_viewers,
        max_loss_pct: args.max_loss,
        max_p95_ms: args.max_p95_ms,
        server_pid: args.server_pid,
    };
    let (update, bar) = progress(cfg.max_viewers as u64);
    let report = loadtest::scenario::capacity(cfg, Some(update)).await;
    finish(bar);
    let report = report.map_err(anyhow::Error::msg)?;
    for s in &report.steps {
        eprintln!(
            "{:>6} viewers  {:>6} connected  loss {:>6.2} %  p95 {:>6} ms  {:>5} Mbit/s each  server CPU {:>5} %  RSS {:>6} MiB  {}",
            s.viewers,
            s.connected,
            s.video_loss_pct,
            s.latency_p95_ms.map_or("—".into(), |v| format!("{v:.0}")),
            s.rx_mbps_per_viewer.map_or("—".into(), |v| format!("{v:.2}")),
            s.server_cpu_pct.map_or("—".into(), |v| format!("{v:.0}")),
            s.server_rss_mib.map_or("—".into(), |v| format!("{v:.0}")),
            if s.ok { "ok" } else { "DEGRADED" }
        );
    }
    eprintln!(
        "capacity: {} viewers ({})",
        report.capacity, report.stopped_because
    );
    write_outputs(
        &report,
        args.json.as_deref(),
        args.charts.as_deref(),
        &report.timeline,
    )?;
    Ok(())
}

#[derive(Debug, Args)]
struct ChatArgs {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Connected readers.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=20_000))]
    readers: u64,
    /// Sending users (each may send 5 messages per 5 s).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    senders: u64,
    /// Messages per second, all senders together.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,
    /// Readers connected per second.
    #[arg(long, default_value_t = 1000.0)]
    ramp: f64,
    /// Pid of the server, to measure its CPU time.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Readers connect to these servers, round-robin (nodes of one cluster); default: --server.
    #[arg(long, value_delimiter = ',')]
    reader_servers: Vec<String>,
    /// Pids of the other nodes, whose CPU time counts too.
    #[arg(long, value_delimiter = ',')]
    other_pids: Vec<u32>,
}

async fn run_chat(args: ChatArgs) -> anyhow::Result<()> {
    if !(0.1..=10_000.0).contains(&args.rate) || !(1.0..=100_000.0).contains(&args.ramp) {
        bail!("--rate 0.1-10000, --ramp 1-100000");
    }
    let limit = rlimit::raise_open_files_limit().context("raising the open-files limit")?;
    if limit < args.readers + args.senders + FD_HEADROOM {
        bail!(
            "open-files limit {limit} is too low for {} readers",
            args.readers
        );
    }
    let report = loadtest::chat::run(loadtest::chat::ChatLoad {
        server: args.server,
        readers: args.readers as usize,
        senders: args.senders as usize,
        rate: args.rate,
        duration: Duration::from_secs(args.duration),
        server_pid: args.server_pid,
        ramp: args.ramp,
        reader_servers: args.reader_servers,
        other_pids: args.other_pids,
    })
    .await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

#[derive(Debug, Args)]
struct ViewersArgs {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Stream name.
    #[arg(long)]
    stream: String,
    /// Number of viewers.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_VIEWERS)))]
    count: u32,
    /// Seconds to measure once every viewer has been started.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: u64,
    /// Viewers started per second.
    #[arg(long, default_value_t = 50.0, value_parser = parse_ramp)]
    ramp: f64,
    /// Pid of the server, to measure its CPU time and RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Also publish synthetic media to the stream with this stream key.
    #[arg(long, value_name = "KEY")]
    publish: Option<String>,
    /// Video codec of the synthetic publisher.
    #[arg(long, value_enum, default_value_t = CodecArg::H264)]
    codec: CodecArg,
    /// Bearer token for WHEP, if the server wants one.
    #[arg(long)]
    token: Option<String>,
    /// Local IP for all peers' sockets and ICE candidates.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    local_ip: IpAddr,
    /// Seconds a peer may take to get ICE + DTLS up.
    #[arg(long, default_value_t = 10)]
    connect_timeout: u64,
    /// Detect RTCP BYE (copies every packet inside str0m; costs client CPU).
    #[arg(long)]
    detect_bye: bool,
    /// Viewers send PLI until their first keyframe, like a browser decoder.
    #[arg(long)]
    request_keyframes: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CodecArg {
    H264,
    Vp8,
}

fn parse_ramp(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && v > 0.0 && v <= 10_000.0 {
        Ok(v)
    } else {
        Err("must be in (0, 10000]".into())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => return exit_code(run_scenario(args).await),
        Command::Capacity(args) => return exit_code(run_capacity(args).await),
        Command::Viewers(args) => run_viewers(args).await,
        Command::Chat(args) => {
            return match run_chat(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
    };
    match result {
        Ok(report) => {
            eprint!("{}", report.human());
            match serde_json::to_string_pretty(&report) {
                Ok(json) => println!("{json}"),
                Err(e) => eprintln!("cannot serialise report: {e}"),
            }
            if report.viewers_connected == 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("glint-loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("glint-loadtest: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run_viewers(args: ViewersArgs) -> anyhow::Result<Report> {
    // Each viewer holds a UDP socket and, while signalling, a TCP connection.
    let needed = u64::from(args.count) * 2 + FD_HEADROOM;
    match rlimit::raise_open_files_limit() {
        Ok(limit) if limit < needed => {
            eprintln!("warning: open-files limit {limit} is below the ~{needed} this run may need")
        }
        Ok(_) => {}
        Err(e) => eprintln!("warning: cannot raise the open-files limit: {e}"),
    }
    let http = reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .no_proxy()
        .build()
        .context("building the HTTP client")?;
    let connect_timeout = Duration::from_secs(args.connect_timeout);

    let publisher = match &args.publish {
        Some(key) => {
            let cfg = PublishConfig {
                local_ip: args.local_ip,
                video_codec: match args.codec {
                    CodecArg::H264 => VideoCodec::H264,
                    CodecArg::Vp8 => VideoCodec::Vp8,
                },
                connect_timeout,
                http: Some(http.clone()),
                ..PublishConfig::new(&args.server, &args.stream, key)
            };
            let handle = publish(cfg).await.context("publishing")?;
            if let Err(e) = handle.wait_connected(connect_timeout).await {
                let _ = handle.stop().await;
                bail!("publisher did not connect: {e}");
            }
            eprintln!("publisher connected: {}", handle.resource_url());
            Some(handle)
        }
        None => None,
    };

    // One certificate for all viewers: generating one per peer costs CPU on our side
    // during the ramp and tells nothing about the server.
    let dtls_cert = str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate();
    let view_cfg = ViewConfig {
        token: args.token.clone(),
        local_ip: args.local_ip,
        connect_timeout,
        http_timeout: HTTP_TIMEOUT,
        request_keyframes: args.request_keyframes,
        detect_bye: args.detect_bye,
        http: Some(http),
        dtls_cert,
        ..ViewConfig::new(&args.server, &args.stream)
    };

    let server_before = match args.server_pid {
        Some(pid) => Some(procfs::sample(pid).with_context(|| format!("reading /proc/{pid}"))?),
        None => None,
    };

    let count = args.count as usize;
    let ramp_started = Instant::now();
    let (handles, mut outcomes) = ramp_up(&view_cfg, count, args.ramp).await;
    let ramp = ramp_started.elapsed();
    eprintln!(
        "{} of {count} viewers started in {:.1} s",
        handles.len(),
        ramp.as_secs_f64()
    );

    let steady_before = match args.server_pid {
        Some(pid) => Some(procfs::sample(pid).with_context(|| format!("reading /proc/{pid}"))?),
        None => None,
    };
    let packets_before: u64 = handles.iter().map(|h| h.stats().packets()).sum();
    let measure_started = Instant::now();
    let measure_end = measure_started + Duration::from_secs(args.duration);
    let mut progress = tokio::time::interval_at(
        (measure_started + PROGRESS_INTERVAL).into(),
        PROGRESS_INTERVAL,
    );
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(measure_end.into()) => break,
            _ = progress.tick() => print_progress(&handles, measure_started),
        }
    }
    let measure = measure_started.elapsed();

    let packets_after: u64 = handles.iter().map(|h| h.stats().packets()).sum();
    let connected_now = handles
        .iter()
        .filter(|h| h.stats().connected_after.is_some())
        .count();
    let server_steady = match (args.server_pid, steady_before) {
        (Some(pid), Some(before)) => {
            let after = procfs::sample(pid).with_context(|| format!("reading /proc/{pid}"))?;
            Some(ServerUsage::between(
                pid,
                before,
                after,
                packets_after.saturating_sub(packets_before),
                connected_now,
            ))
        }
        _ => None,
    };
    outcomes.extend(handles.iter().map(|h| ViewerOutcome::Ran(h.stats())));
    let server = match (args.server_pid, server_before) {
        (Some(pid), Some(before)) => Some((
            pid,
            before,
            procfs::sample(pid).with_context(|| format!("reading /proc/{pid}"))?,
        )),
        _ => None,
    };

    stop_all(handles).await;
    let publisher = match publisher {
        Some(handle) => {
            let stats = handle.stats();
            if let Err(e) = handle.stop().await {
                eprintln!("stopping the publisher: {e}");
            }
            Some(stats)
        }
        None => None,
    };

    let mut report = Report::build(
        RunInfo {
            stream: args.stream,
            viewers_requested: count,
            ramp,
            measure,
            publisher,
            server,
        },
        &outcomes,
    );
    report.server_steady = server_steady;
    Ok(report)
}

/// Starts `count` viewers, `per_sec` per second. Each start is bounded by the HTTP timeout,
/// so the ramp ends at most that long after the last start.
async fn ramp_up(
    cfg: &ViewConfig,
    count: usize,
    per_sec: f64,
) -> (Vec<ViewerHandle>, Vec<ViewerOutcome>) {
    let started = Instant::now();
    let mut pending = JoinSet::new();
    let mut handles = Vec::with_capacity(count);
    let mut failures = Vec::new();
    let mut collect =
        |joined: Result<loadtest::Result<ViewerHandle>, tokio::task::JoinError>| match joined {
            Ok(Ok(handle)) => handles.push(handle),
            Ok(Err(e)) => failures.push(ViewerOutcome::Failed(e.to_string())),
            Err(e) => failures.push(ViewerOutcome::Failed(format!("viewer task: {e}"))),
        };
    for i in 0..count {
        let at = started + Duration::from_secs_f64(i as f64 / per_sec);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(at.into()) => break,
                Some(joined) = pending.join_next() => collect(joined),
            }
        }
        pending.spawn(view(cfg.clone()));
    }
    while let Some(joined) = pending.join_next().await {
        collect(joined);
    }
    (handles, failures)
}

/// DELETEs and closes every viewer concurrently, giving up after [`TEARDOWN_TIMEOUT`].
async fn stop_all(handles: Vec<ViewerHandle>) {
    let total = handles.len();
    let mut stopping: JoinSet<_> = handles.into_iter().map(ViewerHandle::stop).collect();
    let mut failed = 0;
    let finished = tokio::time::timeout(TEARDOWN_TIMEOUT, async {
        while let Some(joined) = stopping.join_next().await {
            if !matches!(joined, Ok(Ok(_))) {
                failed += 1;
            }
        }
    })
    .await;
    if finished.is_err() {
        eprintln!(
            "teardown: {} of {total} viewers still stopping after {TEARDOWN_TIMEOUT:?}; abandoned",
            stopping.len()
        );
    }
    if failed > 0 {
        eprintln!("teardown: {failed} of {total} DELETEs failed");
    }
}

fn print_progress(handles: &[ViewerHandle], since: Instant) {
    let stats: Vec<_> = handles.iter().map(ViewerHandle::stats).collect();
    let connected = stats.iter().filter(|s| s.connected_after.is_some()).count();
    let ended = stats.iter().filter(|s| s.ended.is_some()).count();
    let packets: u64 = stats.iter().map(|s| s.packets()).sum();
    let lost: u64 = stats.iter().map(|s| s.video.lost + s.audio.lost).sum();
    eprintln!(
        "[{:>5.1} s] {connected}/{} connected, {ended} ended, {packets} packets, {lost} lost",
        since.elapsed().as_secs_f64(),
        handles.len()
    );
}
