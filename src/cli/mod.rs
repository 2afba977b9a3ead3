//! Argument parsing and output. No logic lives here beyond turning arguments into
//! library calls and results into text.

mod output;

use anyhow::{bail, Context, Result};
use archpack::bundle::{self, BundleError, BundleReader, ComposeFiles, CreateOptions, Input};
use archpack::platform::{parse_list, Platform};
use archpack::probe;
use archpack::progress::Progress;
use archpack::source::{self, SourceRef};
use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit codes (documented in the README).
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_INTEGRITY: u8 = 3;

#[derive(Parser)]
#[command(
    name = "archpack",
    version,
    about = "One signed file with every image for every architecture, loaded right on hosts without a network",
    propagate_version = true
)]
struct Cli {
    /// No progress bars; only results and errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bundle images of several architectures into one file.
    Create(CreateArgs),
    /// Show what a bundle holds.
    Inspect {
        bundle: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Check every member of a bundle against its index (digests, sizes, headers).
    Verify { bundle: PathBuf },
    /// Show what this host can run, why, and (with --bundle) which platform of a bundle
    /// it would load.
    Platform {
        /// Pick from this bundle's platforms.
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// Skip detection: use this platform (e.g. linux/arm/v7).
        #[arg(long)]
        platform: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct CreateArgs {
    /// Sources: NAME:TAG or docker-daemon:NAME:TAG (local engine),
    /// docker-archive:PATH (plain, .gz or .zst), oci:DIR[:REF], oci-archive:PATH[:REF].
    #[arg(required = true, value_name = "SOURCE")]
    sources: Vec<String>,
    /// The bundle file to write.
    #[arg(short, long)]
    output: PathBuf,
    /// Replace an existing output file.
    #[arg(long)]
    force: bool,
    /// Name the images of a source: --name svc:v1.0=oci:build/svc. Default: the tag
    /// without its architecture suffix (svc:v1.0-arm64 → svc:v1.0).
    #[arg(long = "name", value_name = "LOGICAL=SOURCE")]
    names: Vec<String>,
    /// Keep only these platforms (comma-separated, e.g. linux/amd64,linux/arm64).
    #[arg(long, value_name = "LIST")]
    platform: Option<String>,
    /// Compose file naming images by their logical names.
    #[arg(long, value_name = "FILE")]
    compose: Option<PathBuf>,
    /// Per-platform compose override: linux/arm64=compose.arm64.yaml (repeatable).
    #[arg(long = "compose-override", value_name = "PLATFORM=FILE")]
    compose_overrides: Vec<String>,
    /// zstd compression level, 1 (fast) to 19 (small).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    level: i32,
    /// Compression threads (default: all cores).
    #[arg(long)]
    threads: Option<u32>,
    /// The bundle's name (default: the output file name without extension).
    #[arg(long)]
    bundle_name: Option<String>,
}

pub fn run() -> Result<ExitCode> {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return Ok(ExitCode::from(code));
        }
    };
    let progress = output::Bars::new(cli.quiet);
    match cli.command {
        Command::Create(args) => create(args, &progress),
        Command::Inspect { bundle, json } => {
            let reader = BundleReader::open(&bundle)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&output::inspect_json(&reader))?
                );
            } else {
                print!("{}", output::inspect_table(&reader));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Platform {
            bundle,
            platform,
            json,
        } => platform_command(bundle, platform, json),
        Command::Verify { bundle } => {
            let reader = BundleReader::open(&bundle)?;
            let report = reader.verify(&progress)?;
            println!(
                "{}: OK: {} members, {} verified",
                bundle.display(),
                report.members,
                output::human_bytes(report.bytes)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn create(args: CreateArgs, progress: &output::Bars) -> Result<ExitCode> {
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for n in &args.names {
        let (logical, src) = n
            .split_once('=')
            .with_context(|| format!("--name {n:?}: expected LOGICAL=SOURCE"))?;
        if !args.sources.iter().any(|s| s == src) {
            bail!("--name {n:?}: {src:?} is not one of the sources given");
        }
        names.insert(src.to_string(), logical.to_string());
    }
    let platforms = args
        .platform
        .as_deref()
        .map(parse_list)
        .transpose()
        .context("--platform")?;
    let compose = read_compose(&args)?;
    let created = source_date_epoch()?;
    let mut inputs = Vec::new();
    for s in &args.sources {
        let reference = SourceRef::parse(s)?;
        progress.note(&format!("opening {reference}"));
        let opened = source::open(&reference)?;
        inputs.push(Input {
            source: opened,
            logical_name: names.get(s).cloned(),
        });
    }
    let bundle_name = args.bundle_name.clone().unwrap_or_else(|| {
        args.output
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "bundle".into())
    });
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    });
    let opts = CreateOptions {
        output: args.output.clone(),
        force: args.force,
        level: args.level,
        threads,
        bundle_name,
        created,
        platforms,
        compose,
        signer: None,
    };
    let report = bundle::create(inputs, &opts, progress)?;
    print!("{}", output::create_summary(&report));
    Ok(ExitCode::SUCCESS)
}

/// Detects the host platform, or takes `--platform`; returns the inputs too for display.
fn host_decision(platform: Option<&str>) -> Result<(Option<probe::ProbeInputs>, probe::Decision)> {
    if let Some(p) = platform {
        let p: Platform = p.parse().context("--platform")?;
        return Ok((None, probe::forced(&p)));
    }
    let engine = archpack::docker::Engine::connect();
    let inputs = probe::collect_with_engine(engine.as_ref().map_err(|e| e.to_string()));
    let decision = probe::decide(&inputs)?;
    Ok((Some(inputs), decision))
}

fn platform_command(
    bundle: Option<PathBuf>,
    platform: Option<String>,
    json: bool,
) -> Result<ExitCode> {
    let (inputs, decision) = host_decision(platform.as_deref())?;
    let chosen = match &bundle {
        Some(path) => {
            let reader = BundleReader::open(path)?;
            Some(probe::best_match(&decision, &reader.index.platforms())?)
        }
        None => None,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&output::platform_json(
                inputs.as_ref(),
                &decision,
                chosen.as_ref()
            ))?
        );
    } else {
        print!(
            "{}",
            output::platform_text(inputs.as_ref(), &decision, chosen.as_ref())
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn read_compose(args: &CreateArgs) -> Result<Option<ComposeFiles>> {
    let Some(template) = &args.compose else {
        if !args.compose_overrides.is_empty() {
            bail!("--compose-override needs --compose (the template it overrides)");
        }
        return Ok(None);
    };
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading compose file {}", p.display()))
    };
    let mut files = ComposeFiles {
        template: read(template)?,
        overrides: BTreeMap::new(),
    };
    for o in &args.compose_overrides {
        let (platform, path) = o
            .split_once('=')
            .with_context(|| format!("--compose-override {o:?}: expected PLATFORM=FILE"))?;
        let platform: Platform = platform
            .parse()
            .with_context(|| format!("--compose-override {o:?}"))?;
        files
            .overrides
            .insert(platform.to_string(), read(&PathBuf::from(path))?);
    }
    Ok(Some(files))
}

/// SOURCE_DATE_EPOCH (reproducible builds) or now.
fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a Unix time in seconds")),
        _ => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)),
    }
}

/// One line: the error and its causes.
pub fn render_error(err: &anyhow::Error) -> String {
    let mut s = err.to_string();
    for cause in err.chain().skip(1) {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
    }
    s
}

pub fn exit_code_for(err: &anyhow::Error) -> ExitCode {
    let integrity = err.chain().any(|c| {
        matches!(
            c.downcast_ref::<BundleError>(),
            Some(
                BundleError::DigestMismatch { .. }
                    | BundleError::Truncated { .. }
                    | BundleError::BadMember { .. }
                    | BundleError::BadIndex { .. }
            )
        )
    });
    ExitCode::from(if integrity {
        EXIT_INTEGRITY
    } else {
        EXIT_FAILURE
    })
}
