use clap::Parser;

fn main() {
    // Logs go to stderr; RUST_LOG tunes them (default: info for jpki-access, warnings for the rest).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,jpki_access=info")))
        .init();
    // Installed (or linked) as `kubectl-jpki`, the binary is the kubectl plugin: `kubectl jpki status`.
    let invoked_as = std::env::args().next().unwrap_or_default();
    if std::path::Path::new(&invoked_as).file_name().is_some_and(|n| n == "kubectl-jpki") {
        std::process::exit(jpki_access::cli::plugin::main(std::env::args().skip(1).collect()));
    }
    let cli = jpki_access::cli::Cli::parse();
    std::process::exit(jpki_access::cli::run(cli));
}
