//! `raftlock`: run a lock server, a local demo cluster, run a command under a lock, or
//! talk to a cluster. See `raftlock --help`.

fn main() -> std::process::ExitCode {
    raftlock::cli::main()
}
