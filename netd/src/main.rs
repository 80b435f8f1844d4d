//! `netd`: the daemon (`netd run`) and the command line that talks to it.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
