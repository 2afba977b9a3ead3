//! Argument parsing and output. No logic lives here beyond turning arguments into
//! library calls and results into text.

mod output;

use anyhow::{bail, Context, Result};
use archpack::bundle::{self, BundleError, BundleReader, ComposeFiles, CreateOptions, Input};
use archpack::platform::{parse_list, Platform};
use archpack::probe;
use archpack::progress::Progress;
use archpack::signing::{self, SigningKey, TrustGate, TrustStore, Verdict};
use archpack::source::{self, SourceRef};
use archpack::{compose, engine, extract};
use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit codes (documented in the README).
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_INTEGRITY: u8 = 3;
pub const EXIT_UNTRUSTED: u8 = 4;

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
    /// Show what a bundle holds, and who signed it.
    Inspect {
        bundle: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// Check the signature, then every member of a bundle against its index.
    Verify {
        bundle: PathBuf,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// Load the images for this host's platform into the Docker engine.
    Load(LoadArgs),
    /// Write one platform of a bundle as a docker-archive or an OCI archive.
    Extract(ExtractArgs),
    /// Push a bundle's images into a registry as multi-platform indexes.
    Push(PushArgs),
    /// Print or write a bundle's compose file for a platform.
    Compose {
        bundle: PathBuf,
        #[command(flatten)]
        trust: TrustArgs,
        /// The platform (default: the detected one).
        #[arg(long)]
        platform: Option<String>,
        /// Output file, or - for standard output.
        #[arg(short, long, default_value = "-")]
        output: PathBuf,
        /// Replace an existing output file.
        #[arg(long)]
        force: bool,
    },
    /// Make a signing key pair in minisign's format: PREFIX.key (secret) and PREFIX.pub.
    Keygen {
        /// Path prefix for the two files.
        #[arg(short, long, value_name = "PREFIX")]
        output: PathBuf,
        /// Do not protect the secret key with a password (throwaway keys only).
        #[arg(long)]
        no_password: bool,
        /// Read the password from this file (first line).
        #[arg(long, value_name = "FILE", conflicts_with = "no_password")]
        password_file: Option<PathBuf>,
        /// Replace existing key files.
        #[arg(long)]
        force: bool,
    },
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
struct LoadArgs {
    /// The bundle file, or - to read it from standard input.
    bundle: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// Load this platform instead of the detected one (e.g. linux/arm/v7).
    #[arg(long)]
    platform: Option<String>,
    /// Load only these images (logical names; repeatable). Default: all.
    #[arg(long = "image", value_name = "NAME")]
    images: Vec<String>,
    /// Show what would be loaded, the bytes and the free space; load nothing.
    #[arg(long)]
    dry_run: bool,
    /// Machine-readable result.
    #[arg(long)]
    json: bool,
    /// Write the bundle's compose file for this host here (template + this platform's
    /// override, images pinned).
    #[arg(long, value_name = "FILE")]
    compose_out: Option<PathBuf>,
    /// Replace an existing --compose-out file.
    #[arg(long, requires = "compose_out")]
    force: bool,
    /// After loading, start the services with compose v2 and wait until healthy.
    #[arg(long, requires = "compose_out")]
    up: bool,
    /// How long --up waits for services to become healthy, in seconds.
    #[arg(long, default_value_t = 300, requires = "up")]
    up_timeout: u64,
}

#[derive(clap::Args)]
struct PushArgs {
    bundle: PathBuf,
    /// The registry: HOST[:PORT][/PREFIX] (svc:v1.0 goes to HOST[:PORT]/PREFIX/svc:v1.0).
    target: String,
    #[command(flatten)]
    trust: TrustArgs,
    /// Push only these platforms (comma-separated). Default: all the bundle has.
    #[arg(long, value_name = "LIST")]
    platform: Option<String>,
    /// Push only these images (logical names; repeatable).
    #[arg(long = "image", value_name = "NAME")]
    images: Vec<String>,
    /// Plain HTTP instead of HTTPS (loopback and lab registries only).
    #[arg(long)]
    insecure: bool,
    /// Also trust this CA certificate (PEM) for the registry's HTTPS; repeatable.
    #[arg(long = "ca-cert", value_name = "PEM")]
    ca_certs: Vec<PathBuf>,
    /// Registry user (with --password-stdin).
    #[arg(long, requires = "password_stdin")]
    username: Option<String>,
    /// Read the registry password from standard input.
    #[arg(long, requires = "username")]
    password_stdin: bool,
    /// Layer encoding in the registry: gzip (pullable by Docker 20.10 and older
    /// containerd; re-encoded on the fly) or zstd (as stored).
    #[arg(long, value_enum, default_value = "gzip")]
    layer_format: LayerFormatArg,
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LayerFormatArg {
    Gzip,
    Zstd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ArchiveFormat {
    /// `docker load` / podman: manifest.json, plain layers.
    DockerArchive,
    /// containerd `ctr images import`, k3s agent/images: OCI layout, zstd layers.
    OciArchive,
}

#[derive(clap::Args)]
struct ExtractArgs {
    bundle: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// The platform to write (default: the detected one).
    #[arg(long)]
    platform: Option<String>,
    #[arg(long, value_enum, default_value = "docker-archive")]
    format: ArchiveFormat,
    /// Output file.
    #[arg(short, long)]
    output: PathBuf,
    /// Only these images (logical names; repeatable).
    #[arg(long = "image", value_name = "NAME")]
    images: Vec<String>,
    /// Replace an existing output file.
    #[arg(long)]
    force: bool,
}

/// Which signers to trust.
#[derive(clap::Args)]
struct TrustArgs {
    /// A trusted public key (minisign .pub); repeatable. Also trusted: *.pub in
    /// /etc/archpack/trust.d/ and $XDG_CONFIG_HOME/archpack/trust.d/.
    #[arg(long = "trust", value_name = "PUBKEY")]
    keys: Vec<PathBuf>,
    /// Accept a bundle without a signature (prints a warning).
    #[arg(long)]
    allow_unsigned: bool,
}

impl TrustArgs {
    fn store(&self) -> Result<TrustStore> {
        Ok(TrustStore::load(
            &self.keys,
            &signing::default_trust_dirs(),
        )?)
    }
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
    /// Sign the bundle with this minisign secret key.
    #[arg(long, value_name = "KEY")]
    sign: Option<PathBuf>,
    /// Read the secret key's password from this file (first line). Also:
    /// ARCHPACK_PASSWORD, or a prompt on a terminal.
    #[arg(long, value_name = "FILE", requires = "sign")]
    password_file: Option<PathBuf>,
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
        Command::Load(args) => load(args, &progress),
        Command::Push(args) => push_command(args, &progress),
        Command::Compose {
            bundle,
            trust,
            platform,
            output: out,
            force,
        } => {
            let (reader, _) = open_trusted(&bundle, &trust)?;
            let decision = host_decision(platform.as_deref(), None)?.1;
            let selected = extract::select(&reader.index, &decision, &[])?;
            let text = render_compose(&reader, &selected)?;
            if out.as_os_str() == "-" {
                print!("{text}");
            } else {
                archpack::fsutil::write_bytes(&out, text.as_bytes(), force, 0o644)?;
                println!("wrote {}", out.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Extract(args) => extract_command(args, &progress),
        Command::Inspect {
            bundle,
            json,
            trust,
        } => {
            let reader = BundleReader::open(&bundle)?;
            let signer = signer_status(&reader, &trust.store()?);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&output::inspect_json(&reader, &signer))?
                );
            } else {
                print!("{}", output::inspect_table(&reader, &signer));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Platform {
            bundle,
            platform,
            json,
        } => platform_command(bundle, platform, json),
        Command::Keygen {
            output: prefix,
            no_password,
            password_file,
            force,
        } => {
            let password = if no_password {
                None
            } else {
                Some(read_password(password_file.as_deref(), true)?.context(
                    "keygen needs a password for the secret key: give --password-file FILE, set ARCHPACK_PASSWORD, run on a terminal, or pass --no-password for a throwaway key",
                )?)
            };
            let files = signing::keygen(&prefix, password, force)?;
            println!(
                "key {}: secret {} (keep it offline), public {} (give it to the sites)",
                files.key_id,
                files.secret.display(),
                files.public.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { bundle, trust } => {
            let (reader, signer) = open_trusted(&bundle, &trust)?;
            let report = reader.verify(&progress)?;
            println!(
                "{}: OK: {signer}; {} members, {} verified",
                bundle.display(),
                report.members,
                output::human_bytes(report.bytes)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Opens a bundle after the trust decision; says who signed it.
fn open_trusted(path: &std::path::Path, trust: &TrustArgs) -> Result<(BundleReader, String)> {
    let store = trust.store()?;
    let gate = TrustGate::new(&store, trust.allow_unsigned);
    let reader = if path.as_os_str() == "-" {
        let stdin = Box::new(std::io::BufReader::with_capacity(1 << 20, std::io::stdin()));
        BundleReader::open_stream(stdin, std::path::Path::new("(stdin)"), &gate)?
    } else {
        BundleReader::open_checked(path, &gate)?
    };
    Ok((reader, describe_verdict(gate.verdict())))
}

fn load(args: LoadArgs, progress: &output::Bars) -> Result<ExitCode> {
    let (reader, signer) = open_trusted(&args.bundle, &args.trust)?;
    let engine = archpack::docker::Engine::connect()?;
    let decision = host_decision(args.platform.as_deref(), Some(&engine))?.1;
    let selected = extract::select(&reader.index, &decision, &args.images)?;
    // The compose file is rendered before anything is sent: its errors come first.
    let compose_text = match &args.compose_out {
        Some(path) => {
            if path.exists() && !args.force {
                bail!(
                    "{}: already exists; pass --force to replace it",
                    path.display()
                );
            }
            Some(render_compose(&reader, &selected)?)
        }
        None => None,
    };
    let state = engine::engine_state(&engine)?;
    let plan = engine::plan(&reader, &selected, &state)?;
    engine::check_space(&plan, &state)?;
    let mut sent = 0;
    if !args.dry_run {
        sent = engine::send(&engine, &reader, &selected, &plan, progress)?;
        engine::tag_and_check(&engine, &selected)?;
    }
    if let (Some(path), Some(text), false) = (&args.compose_out, &compose_text, args.dry_run) {
        archpack::fsutil::write_bytes(path, text.as_bytes(), args.force, 0o644)?;
        progress.note(&format!("wrote {}", path.display()));
    }
    let report = output::LoadReport {
        decision: &decision,
        selected: &selected,
        plan: &plan,
        state: &state,
        dry_run: args.dry_run,
        archive_bytes_sent: sent,
        bundle_bytes_read: reader.bytes_read(),
        signer,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        print!("{}", report.text());
    }
    if let (true, Some(path)) = (args.up && !args.dry_run, &args.compose_out) {
        let project = compose::project_name(&reader.index.name);
        progress.note(&format!(
            "starting the services of {} and waiting until healthy",
            path.display()
        ));
        let services = compose::up(path, &project, args.up_timeout)?;
        print!("{}", output::services_table(&services));
    }
    Ok(ExitCode::SUCCESS)
}

/// Cores to use by default (1 when the system will not say).
fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The bundle's compose file for the selected images' platforms.
fn render_compose(reader: &BundleReader, selected: &[extract::Selected]) -> Result<String> {
    let files = reader
        .index
        .compose
        .as_ref()
        .ok_or(compose::ComposeError::NoTemplate)?;
    let platform = selected
        .first()
        .map(|s| s.entry.platform.clone())
        .context("no image selected")?;
    let chosen = |logical: &str| {
        selected
            .iter()
            .find(|s| s.image.name == logical)
            .map(|s| s.entry.platform.clone())
    };
    let header = compose::header(&reader.index, &platform);
    Ok(compose::render(
        files,
        &compose::Carried::from_index(&reader.index),
        &platform,
        &chosen,
        &header,
    )?)
}

fn push_command(args: PushArgs, progress: &output::Bars) -> Result<ExitCode> {
    let (reader, _) = open_trusted(&args.bundle, &args.trust)?;
    let keep = args
        .platform
        .as_deref()
        .map(parse_list)
        .transpose()
        .context("--platform")?;
    let selected: Vec<extract::Selected> = reader
        .index
        .images
        .iter()
        .filter(|i| args.images.is_empty() || args.images.contains(&i.name))
        .flat_map(|image| {
            image
                .platforms
                .iter()
                .map(move |entry| extract::Selected { image, entry })
        })
        .filter(|s| keep.as_ref().is_none_or(|k| k.contains(&s.entry.platform)))
        .collect();
    if selected.is_empty() {
        bail!("nothing to push: no image of the bundle matches --image/--platform");
    }
    let password = if args.password_stdin {
        let mut p = String::new();
        std::io::stdin().read_line(&mut p)?;
        Some(p.trim_end_matches(['\n', '\r']).to_string())
    } else {
        None
    };
    let opts = archpack::push::PushOptions {
        target: args.target.clone(),
        insecure: args.insecure,
        ca_certs: args.ca_certs.clone(),
        username: args.username.clone(),
        password,
        layer_format: match args.layer_format {
            LayerFormatArg::Gzip => archpack::push::LayerFormat::Gzip,
            LayerFormatArg::Zstd => archpack::push::LayerFormat::Zstd,
        },
        gzip_threads: cores(),
        digest_cache: archpack::push::default_digest_cache(),
    };
    let report = archpack::push::push(&reader, &selected, &opts, progress)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for image in &report.images {
            println!(
                "{}  {}  index {}",
                image.reference,
                image.platforms.join(","),
                image.index_digest.short()
            );
        }
        println!(
            "uploaded {} blobs ({}), mounted {} across repositories, {} already there; {} gzip passes",
            report.blobs_uploaded,
            output::human_bytes(report.bytes_uploaded),
            report.blobs_mounted,
            report.blobs_present,
            report.gzip_passes
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn extract_command(args: ExtractArgs, progress: &output::Bars) -> Result<ExitCode> {
    let (reader, _) = open_trusted(&args.bundle, &args.trust)?;
    let decision = host_decision(args.platform.as_deref(), None)?.1;
    let selected = extract::select(&reader.index, &decision, &args.images)?;
    let stats = match args.format {
        ArchiveFormat::DockerArchive => {
            extract::docker_archive_file(&reader, &selected, &args.output, args.force, 0, progress)?
        }
        ArchiveFormat::OciArchive => {
            extract::oci_archive_file(&reader, &selected, &args.output, args.force, 0, progress)?
        }
    };
    println!(
        "wrote {}: {} image{} for {}, {} layers, {}",
        args.output.display(),
        stats.images,
        if stats.images == 1 { "" } else { "s" },
        selected
            .iter()
            .map(|s| s.entry.platform.to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(", "),
        stats.layers_sent,
        output::human_bytes(stats.bytes_written)
    );
    Ok(ExitCode::SUCCESS)
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
    let references = args
        .sources
        .iter()
        .map(|s| Ok((SourceRef::parse(s)?, names.get(s).cloned())))
        .collect::<Result<Vec<_>>>()?;
    progress.note(&format!("opening {} sources", references.len()));
    let inputs: Vec<Input> = source::open_all(&references)?
        .into_iter()
        .map(|source| Input { source })
        .collect();
    let bundle_name = args.bundle_name.clone().unwrap_or_else(|| {
        args.output
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "bundle".into())
    });
    let threads = args
        .threads
        .unwrap_or_else(|| u32::try_from(cores()).unwrap_or(u32::MAX));
    let signer = match &args.sign {
        Some(key) => {
            let password = if SigningKey::needs_password(key)? {
                read_password(args.password_file.as_deref(), false)?
            } else {
                None
            };
            Some(SigningKey::load(key, password)?)
        }
        None => None,
    };
    let compose_check = |plan: &[bundle::PlanEntry]| -> Result<(), String> {
        match &compose {
            Some(files) => compose::validate(files, &compose::Carried::from_plan(plan))
                .map_err(|e| e.to_string()),
            None => Ok(()),
        }
    };
    let opts = CreateOptions {
        output: args.output.clone(),
        force: args.force,
        level: args.level,
        threads,
        bundle_name,
        created,
        platforms,
        compose: compose.clone(),
        signer: signer.as_ref().map(|s| s as &dyn bundle::IndexSigner),
        plan_check: Some(&compose_check),
    };
    let report = bundle::create(inputs, &opts, progress)?;
    print!("{}", output::create_summary(&report));
    Ok(ExitCode::SUCCESS)
}

/// Detects the host platform (asking `engine`, or connecting to one if none is given),
/// or takes `--platform`; returns the inputs too for display.
fn host_decision(
    platform: Option<&str>,
    engine: Option<&archpack::docker::Engine>,
) -> Result<(Option<probe::ProbeInputs>, probe::Decision)> {
    if let Some(p) = platform {
        let p: Platform = p.parse().context("--platform")?;
        return Ok((None, probe::forced(&p)));
    }
    let inputs = match engine {
        Some(e) => probe::collect_with_engine(Ok(e)),
        None => {
            let connected = archpack::docker::Engine::connect();
            probe::collect_with_engine(connected.as_ref().map_err(|e| e.to_string()))
        }
    };
    let decision = probe::decide(&inputs)?;
    Ok((Some(inputs), decision))
}

fn platform_command(
    bundle: Option<PathBuf>,
    platform: Option<String>,
    json: bool,
) -> Result<ExitCode> {
    let (inputs, decision) = host_decision(platform.as_deref(), None)?;
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

/// The password from --password-file, ARCHPACK_PASSWORD, or a terminal prompt (in
/// that order). Never echoed.
fn read_password(file: Option<&std::path::Path>, confirm: bool) -> Result<Option<String>> {
    if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading the password file {}", f.display()))?;
        return Ok(Some(text.lines().next().unwrap_or("").to_string()));
    }
    if let Ok(pw) = std::env::var("ARCHPACK_PASSWORD") {
        if !pw.is_empty() {
            return Ok(Some(pw));
        }
    }
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let pw = rpassword::prompt_password("Password for the secret key: ")?;
    if confirm {
        let again = rpassword::prompt_password("The same password again: ")?;
        if pw != again {
            bail!("the two passwords differ");
        }
    }
    Ok(Some(pw))
}

/// "signed by key X (trusted: FILE)" or the unsigned warning's short form.
fn describe_verdict(verdict: Option<Verdict>) -> String {
    match verdict {
        Some(Verdict::Trusted { key_id, source, .. }) => {
            format!("signed by key {key_id} (trusted via {})", source.display())
        }
        Some(Verdict::UnsignedAllowed) => {
            eprintln!(
                "archpack: warning: the bundle is NOT signed; accepted because of --allow-unsigned"
            );
            "unsigned (allowed)".into()
        }
        None => "signature not checked".into(),
    }
}

/// Who signed a bundle and whether that key is trusted here (for `inspect`).
fn signer_status(reader: &BundleReader, store: &TrustStore) -> output::Signer {
    let Some(sig) = reader.signature.as_deref() else {
        return output::Signer::Unsigned;
    };
    let key_id = signing::signer_key_id(sig).unwrap_or_else(|| "unreadable".into());
    match signing::check(&reader.index_bytes, Some(sig), store, false) {
        Ok(_) => output::Signer::Trusted(key_id),
        Err(signing::SigningError::Untrusted { .. }) => output::Signer::Untrusted(key_id),
        Err(e) => output::Signer::Bad(key_id, e.to_string()),
    }
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

/// A blob failed its check while being read (transparent wrappers hide it from chains).
fn is_corrupt_blob(e: Option<&extract::ExtractError>) -> bool {
    matches!(
        e,
        Some(extract::ExtractError::Corrupt { .. } | extract::ExtractError::Truncated { .. })
    )
}

pub fn exit_code_for(err: &anyhow::Error) -> ExitCode {
    let untrusted = err.chain().any(|c| {
        matches!(
            c.downcast_ref::<signing::SigningError>(),
            Some(
                signing::SigningError::Unsigned
                    | signing::SigningError::Untrusted { .. }
                    | signing::SigningError::BadSignature { .. }
                    | signing::SigningError::MalformedSignature(_)
            )
        )
    });
    if untrusted {
        return ExitCode::from(EXIT_UNTRUSTED);
    }
    let integrity = err.chain().any(|c| {
        matches!(
            c.downcast_ref::<BundleError>(),
            Some(
                BundleError::DigestMismatch { .. }
                    | BundleError::CorruptLayer { .. }
                    | BundleError::Truncated { .. }
                    | BundleError::BadMember { .. }
                    | BundleError::BadIndex { .. }
            )
        ) || is_corrupt_blob(c.downcast_ref::<extract::ExtractError>())
            || matches!(
                c.downcast_ref::<engine::LoadError>(),
                Some(engine::LoadError::LayerMismatch(_))
            )
            || is_corrupt_blob(match c.downcast_ref::<engine::LoadError>() {
                Some(engine::LoadError::Extract(e)) => Some(e),
                _ => None,
            })
            || match c.downcast_ref::<archpack::push::PushError>() {
                Some(archpack::push::PushError::Corrupt { .. }) => true,
                Some(archpack::push::PushError::Bundle(e)) => is_corrupt_blob(Some(e)),
                _ => false,
            }
    });
    ExitCode::from(if integrity {
        EXIT_INTEGRITY
    } else {
        EXIT_FAILURE
    })
}
