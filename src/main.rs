//! The `jerex` command line: one binary for the life of a model and a corpus.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use jerex::error::ErrorClass;

/// One allocator for Rust and libtorch alike (mimalloc, overriding `malloc` for the whole process):
/// under glibc the heap grew with corpus length (see `docs/performance.md`), most likely
/// fragmentation around buffers of varying shapes. When freed memory goes back to the OS is set
/// in `jerex::alloc`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes for job engines (Kubernetes, Slurm, cron) to act on; sysexits.h values where one
/// fits.
const EX_REJECTED: u8 = 3;
const EX_DATAERR: u8 = 65;
const EX_TEMPFAIL: u8 = 75;
const EX_CONFIG: u8 = 78;

const EXIT_CODES: &str = "\
Exit codes:
  0   success
  3   success, but some documents were rejected or failed (reasons in the documents table);
      all other output is written
  65  bad input data stopped the run: a corrupt or truncated input file or one whose columns
      do not fit the job (the other files are still processed), or a rejected document in
      strict mode
  75  retryable failure: an I/O error such as a full disk, a device or out-of-memory failure,
      SIGTERM or Ctrl-C, another run writing the same output; run again (finished units are
      kept)
  78  bad configuration: job file, flags, model folder or weights, input columns that fit no
      input file, an output directory that cannot be written or lies inside the inputs
  1   any other error";

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
    #[command(after_help = EXIT_CODES)]
    Run(jerex::engine::RunArgs),
    /// Show how a job's work units split over shards (machines), without running anything.
    Plan(jerex::engine::plan::PlanArgs),
    /// Measure pipeline throughput (prints one JSON object).
    Bench(jerex::tools::BenchArgs),
    /// Train a joint model on DocRED-format data (best epoch by strict relation F1).
    Train(jerex::train::TrainArgs),
    /// Strict end-to-end and gold-input scores of a model on a labelled file (JSON on stdout).
    Eval(jerex::eval::EvalArgs),
    /// Grid-search the decision thresholds on a labelled file; writes them into config.json.
    Tune(jerex::eval::tune::TuneArgs),
    /// Convert a checkpoint of the reference implementation (lavis-nlp/jerex) into a model
    /// folder; nothing in the checkpoint is executed.
    ImportReference(jerex::reference::ImportArgs),
}

fn main() -> ExitCode {
    jerex::alloc::configure();
    jerex::device::init_cuda();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version end here too, successfully; bad flags are bad configuration.
            return if e.use_stderr() {
                ExitCode::from(EX_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // Kubernetes and Slurm stop work with SIGTERM (preemption, drain, time limit). Outputs are
    // atomic and finished units are recorded, so stopping at once loses nothing: exit as
    // retryable, and the rerun resumes, also on another machine, which would otherwise wait for
    // this run's lease to expire. `_exit`, not `exit`: running libtorch's static destructors
    // under its live worker threads can crash the process instead.
    let on_signal = || {
        jerex::engine::lease::release_all();
        // SAFETY: `_exit` only ends the process.
        unsafe { libc::_exit(EX_TEMPFAIL.into()) }
    };
    if let Err(e) = ctrlc::set_handler(on_signal) {
        eprintln!("warning: no SIGTERM handler: {e}");
    }
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            // The message and its causes, never a backtrace: RUST_BACKTRACE is often set in CI
            // environments, and a user error is not a crash.
            eprintln!("Error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            let class = e.downcast_ref::<jerex::Error>().map(jerex::Error::class);
            ExitCode::from(match class {
                Some(ErrorClass::Config) => EX_CONFIG,
                Some(ErrorClass::Data) => EX_DATAERR,
                Some(ErrorClass::Retryable) => EX_TEMPFAIL,
                None => 1,
            })
        }
    }
}

/// Commands other than `run` succeed or fail, nothing in between.
fn done<T>(r: jerex::Result<T>) -> Result<ExitCode> {
    r.map(|_| ExitCode::SUCCESS).map_err(Into::into)
}

fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Doctor => doctor().map(|()| ExitCode::SUCCESS),
        Command::Run(args) => {
            let report = jerex::engine::run(&args)?;
            Ok(if report.rejected + report.failed > 0 {
                ExitCode::from(EX_REJECTED)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Plan(args) => done(jerex::engine::plan::run(&args)),
        Command::Bench(args) if !args.long.is_empty() => {
            done(jerex::tools::bench::bench_long(&args))
        }
        Command::Bench(args) => done(jerex::tools::bench(&args)),
        Command::Train(args) => done(jerex::train::run(&args)),
        Command::Eval(args) => done(jerex::eval::run(&args)),
        Command::Tune(args) => done(jerex::eval::tune::run(&args)),
        Command::ImportReference(args) => done(jerex::reference::import::run(&args)),
    }
}

fn doctor() -> Result<()> {
    use jerex::paths;
    let cuda = jerex::device::init_cuda();
    println!("jerex {}", env!("CARGO_PKG_VERSION"));
    println!(
        "libtorch: {} ({})",
        option_env!("JEREX_LIBTORCH_VERSION").unwrap_or("unknown"),
        jerex::device::libtorch_dir().map_or("libtorch_cpu.so not loaded?".into(), |d| d
            .display()
            .to_string())
    );
    let search: Vec<String> = jerex::device::torch_cuda_candidates()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    println!("libtorch_cuda.so looked for: {}", search.join(", then "));
    println!("cuda: {cuda}");
    println!(
        "cuda available: {} (devices: {}, cudnn: {})",
        tch::Cuda::is_available(),
        tch::Cuda::device_count(),
        tch::Cuda::cudnn_is_available()
    );
    println!(
        "allocator: mimalloc, purge delay {} ms",
        jerex::alloc::purge_delay_ms()
    );
    println!(
        "threads: {} intra-op (torch), {} cores available",
        tch::get_num_threads(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    match paths::default_encoder_dir() {
        Ok(dir) => println!("encoder: {}", dir.display()),
        Err(e) => println!("encoder: {e}"),
    }
    match paths::default_model_dir() {
        Ok(dir) if dir.join("config.json").is_file() => {
            println!("default model: {} (found)", dir.display())
        }
        Ok(dir) => println!("default model: {} (no config.json there)", dir.display()),
        Err(e) => println!("default model: {e}"),
    }
    Ok(())
}
