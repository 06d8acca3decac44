//! The `jerex` command line: one binary for the life of a model and a corpus.

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "jerex",
    version,
    about = "Joint entity-level relation extraction: mentions, coreference, entity types and relations from document corpora into Arrow/Parquet tables"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the libtorch version, CUDA availability, devices, threads and where models are found.
    Doctor,
    /// Run a corpus job: Parquet documents in, mentions/entities/relations/documents tables out.
    Run(jerex::engine::RunArgs),
    /// Measure pipeline throughput (prints one JSON object).
    Bench(jerex::engine::BenchArgs),
    /// Train a joint model on DocRED-format data (best epoch by strict relation F1).
    Train(jerex::train::TrainArgs),
    /// Strict end-to-end and gold-input scores of a model on a labelled file (JSON on stdout).
    Eval(jerex::eval::EvalArgs),
    /// Grid-search the decision thresholds on a labelled file; writes them into config.json.
    Tune(jerex::eval::tune::TuneArgs),
}

fn main() -> Result<()> {
    jerex::device::init_cuda();
    let cli = Cli::parse();
    match cli.command {
        Command::Doctor => doctor(),
        Command::Run(args) => jerex::engine::run(&args).map(drop).map_err(Into::into),
        Command::Bench(args) => jerex::engine::bench(&args).map(drop).map_err(Into::into),
        Command::Train(args) => jerex::train::run(&args).map_err(Into::into),
        Command::Eval(args) => jerex::eval::run(&args).map_err(Into::into),
        Command::Tune(args) => jerex::eval::tune::run(&args).map_err(Into::into),
    }
}

fn doctor() -> Result<()> {
    use jerex::paths;
    let cuda = jerex::device::init_cuda();
    println!("jerex {}", env!("CARGO_PKG_VERSION"));
    println!(
        "libtorch: {} ({})",
        option_env!("JEREX_LIBTORCH_VERSION").unwrap_or("unknown"),
        option_env!("JEREX_LIBTORCH_LIB").unwrap_or("location not recorded at build time")
    );
    println!("cuda: {cuda}");
    println!(
        "cuda available: {} (devices: {}, cudnn: {})",
        tch::Cuda::is_available(),
        tch::Cuda::device_count(),
        tch::Cuda::cudnn_is_available()
    );
    println!(
        "threads: {} intra-op (torch), {} cores available",
        tch::get_num_threads(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    match paths::default_encoder_dir() {
        Some(dir) => println!("encoder: {}", dir.display()),
        None => println!("encoder: not found (run scripts/bootstrap.sh or set JEREX_ENCODER)"),
    }
    let model = paths::default_model_dir();
    let state = if model.join("config.json").is_file() {
        "found"
    } else {
        "missing"
    };
    println!("default model: {} ({state})", model.display());
    Ok(())
}
