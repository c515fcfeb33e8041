use clap::Parser;

fn main() {
    let cli = jpki_access::cli::Cli::parse();
    std::process::exit(jpki_access::cli::run(cli));
}
