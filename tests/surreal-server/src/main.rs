//! `surreal-server start --bind HOST:PORT --user U --pass P memory|surrealkv://DIR`: the
//! SurrealDB server's own command line (it reads the process's arguments).

fn main() -> std::process::ExitCode {
    surrealdb_server::init(surrealdb_server::core::CommunityComposer())
}
