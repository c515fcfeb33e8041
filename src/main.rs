use clap::Parser;

fn main() {
    // Logs go to stderr; RUST_LOG tunes them (default: info for jpki-access, warnings for the rest).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,jpki_access=info")),
        )
        .init();
    let cli = jpki_access::cli::Cli::parse();
    std::process::exit(jpki_access::cli::run(cli));
}
