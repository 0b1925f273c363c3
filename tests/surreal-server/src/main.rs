//! `surreal-server start --bind HOST:PORT --user U --pass P memory|surrealkv://DIR`: the
//! SurrealDB server's own command line (it reads the process's arguments).

// The server's query futures are deep: an optimized build needs more than the default 128.
#![recursion_limit = "256"]

fn main() -> std::process::ExitCode {
    surrealdb_server::init(surrealdb_server::core::CommunityComposer())
}
