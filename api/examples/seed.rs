//! Seed a database for the API benchmark: N users (one password hash shared, so seeding does
//! not spend minutes in argon2), M streams (a share of them live, with viewer counts) and F
//! follows. Usage: `cargo run --release -p api --example seed -- surrealkv://data/db 10000 1000 100000`

use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("surrealkv://data/db");
    let users: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let streams: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1_000);
    let follows: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    // A SurrealDB server's root user, from GLINT_DATABASE_USER / GLINT_DATABASE_PASSWORD.
    let credentials =
        std::env::var("GLINT_DATABASE_USER")
            .ok()
            .map(|username| api::db::Credentials {
                level: api::db::AuthLevel::Root,
                username,
                password: std::env::var("GLINT_DATABASE_PASSWORD").unwrap_or_default(),
            });
    let db = api::db::connect_with(&api::db::DbConfig {
        url: url.to_owned(),
        credentials,
        ..api::db::DbConfig::default()
    })
    .await?;
    let gate = api::hash_gate::HashGate::default();
    let hash = api::auth::hash_password(&gate, "a good password".into()).await?;
    let started = std::time::Instant::now();
    let ids: Vec<String> = (0..users).map(|_| api::db::new_id()).collect();
    let cats: Vec<&str> = api::db::CATEGORIES.iter().map(|(s, _)| *s).collect();

    const BATCH: usize = 500;
    for (chunk_no, chunk) in ids.chunks(BATCH).enumerate() {
        let rows: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let n = chunk_no * BATCH + i;
                json!({"id": id, "username": format!("user{n}"), "email": format!("user{n}@example.com"), "password_hash": hash, "created_at": n as i64})
            })
            .collect();
        db.query("FOR $u IN $rows { CREATE type::record('user', $u.id) SET username = $u.username, email = $u.email, password_hash = $u.password_hash, created_at = $u.created_at }")
            .bind(("rows", rows))
            .await?
            .check()?;
    }
    let stream_rows: Vec<_> = ids
        .iter()
        .take(streams)
        .enumerate()
        .map(|(n, owner)| {
            let live = n % 3 == 0;
            json!({"id": api::db::new_id(), "owner": owner, "name": format!("user{n}"), "title": format!("Stream {n}"),
                   "category": cats[n % cats.len()], "key": format!("live_seed{n}"), "live": live,
                   "started": if live { Some(n as i64) } else { None }, "viewers": if live { (n * 7919) % 5000 } else { 0 }})
        })
        .collect();
    for chunk in stream_rows.chunks(BATCH) {
        db.query("FOR $s IN $rows { CREATE type::record('stream', $s.id) SET owner = $s.owner, name = $s.name, title = $s.title, category = $s.category, tags = [], language = 'en', stream_key = $s.key, live = $s.live, started_at = $s.started, viewers = $s.viewers, created_at = 0 }")
            .bind(("rows", chunk.to_vec()))
            .await?
            .check()?;
    }
    let mut pairs = std::collections::HashSet::new();
    let mut rng_state: u64 = 0x9e3779b97f4a7c15;
    let mut next = || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    while pairs.len() < follows.min(users * streams.saturating_sub(1)) {
        let f = (next() % users as u64) as usize;
        let c = (next() % streams as u64) as usize;
        if f != c {
            pairs.insert((f, c));
        }
    }
    let follow_rows: Vec<_> = pairs
        .into_iter()
        .map(|(f, c)| json!({"id": api::db::new_id(), "follower": ids[f], "channel": ids[c]}))
        .collect();
    for chunk in follow_rows.chunks(BATCH) {
        db.query("FOR $f IN $rows { CREATE type::record('follow', $f.id) SET follower = $f.follower, channel = $f.channel, created_at = 0 }")
            .bind(("rows", chunk.to_vec()))
            .await?
            .check()?;
    }
    println!(
        "seeded {users} users, {streams} streams, {} follows in {:.1} s",
        follow_rows.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
