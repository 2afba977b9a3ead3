//! The command line: parses arguments, resolves them once (the engine endpoint, the
//! trust store, platforms, files named on the command line) into a request, calls one
//! library use-case, and renders its report as text or `--json`. No decisions live here.

mod render;

use archpack::deliver::registry;
use archpack::docker::Endpoint;
use archpack::format::{exit, ComposeFiles};
use archpack::ops::{self, BundleInput, RequestError, TrustPolicy};
use archpack::platform::{parse_platform, parse_platforms, Platform};
use archpack::source::SourceRef;
use archpack::trust::{self, SigningKey, TrustError, TrustStore};
use archpack::Error;
use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    ///
    /// A volume named alone is checked alone; NAME (without .001) checks every volume.
    Verify {
        bundle: PathBuf,
        /// Further volumes of the bundle kept elsewhere (the rest are found beside it).
        #[arg(value_name = "VOLUME")]
        more: Vec<PathBuf>,
        #[command(flatten)]
        trust: TrustArgs,
        #[arg(long)]
        json: bool,
    },
    /// Load the images for this host's platform into the Docker engine.
    Load(LoadArgs),
    /// Write one platform of a bundle as a docker-archive or an OCI archive.
    Extract(ExtractArgs),
    /// Push a bundle's images into a registry as multi-platform indexes.
    Push(PushArgs),
    /// Answer pulls from bundles as a read-only registry (Docker, containerd/k3s, podman).
    ///
    /// Each image is one multi-platform index, so every host pulls its own architecture.
    /// Runs until SIGINT or SIGTERM, then prints a summary.
    Serve(ServeArgs),
    /// Print or write a bundle's compose file for a platform.
    Compose {
        bundle: PathBuf,
        /// Further volumes of the bundle kept elsewhere (the rest are found beside it).
        #[arg(value_name = "VOLUME")]
        more: Vec<PathBuf>,
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
    /// Put a bundle's volumes back into one file.
    ///
    /// The file `create` writes without --volume-size, byte for byte; each member is
    /// checked on the way, and the output appears whole or not at all.
    Join {
        /// A volume of the bundle (NAME.001, …).
        volume: PathBuf,
        /// Further volumes of the bundle kept elsewhere (the rest are found beside it).
        #[arg(value_name = "VOLUME")]
        more: Vec<PathBuf>,
        /// The single-file bundle to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Replace an existing output file.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
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
    /// Record what the engine here holds (images, layers, the platform a load would
    /// choose) for a build host to make a delta bundle against: create --base FILE.
    Inventory {
        /// Write the inventory to this file.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// What the site is called in the inventory (default: the output file's name,
        /// else the host name).
        #[arg(long)]
        name: Option<String>,
        /// Record this platform instead of the detected one.
        #[arg(long)]
        platform: Option<String>,
        /// Replace an existing output file.
        #[arg(long)]
        force: bool,
        /// Print the inventory itself (JSON) on standard output.
        #[arg(long)]
        json: bool,
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
    /// The bundle file (or any of its volumes), or - to read it from standard input.
    bundle: PathBuf,
    /// Further volumes of the bundle kept elsewhere (the rest are found beside it).
    #[arg(value_name = "VOLUME")]
    more: Vec<PathBuf>,
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
    /// For a delta bundle: an earlier bundle to take the layers it leaves out from,
    /// where the engine does not have them (checked with the same --trust); repeatable.
    #[arg(long = "base", value_name = "BUNDLE")]
    bases: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct PushArgs {
    bundle: PathBuf,
    /// The registry: HOST[:PORT][/PREFIX] (svc:v1.0 goes to HOST[:PORT]/PREFIX/svc:v1.0).
    target: String,
    /// A further volume of the bundle kept elsewhere; repeatable (the rest are found
    /// beside the bundle argument).
    #[arg(long = "volume", value_name = "FILE")]
    more: Vec<PathBuf>,
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

#[derive(clap::Args)]
struct ServeArgs {
    /// Bundle files (or any volume of each, the rest beside it); several are served
    /// together.
    #[arg(required = true, value_name = "BUNDLE")]
    bundles: Vec<PathBuf>,
    #[command(flatten)]
    trust: TrustArgs,
    /// Address and port to listen on (port 0: any free one; the first line says which).
    #[arg(long, default_value = "0.0.0.0:5000", value_name = "ADDR:PORT")]
    listen: String,
    /// Serve HTTPS with this certificate chain (PEM; with --tls-key).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Layers as stored (zstd), as gzip (Docker 20.10, containerd before 1.5), or auto:
    /// both, a tag resolving per client by its User-Agent.
    #[arg(long, value_enum, default_value = "auto")]
    layer_format: ServeLayerFormatArg,
    /// Serve svc:v1.0 as PREFIX/svc:v1.0.
    #[arg(long, default_value = "", value_name = "PREFIX")]
    prefix: String,
    /// Blobs sent at once (memory is bounded by this, not by the clients); further
    /// requests wait their turn.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    max_transfers: u16,
    /// Seconds requests under way may take to finish after SIGINT/SIGTERM.
    #[arg(long, default_value_t = 10)]
    grace: u64,
    /// The access log and the summary as JSON lines.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ServeLayerFormatArg {
    Auto,
    Gzip,
    Zstd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LayerFormatArg {
    Gzip,
    Zstd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ArchiveFormatArg {
    /// `docker load` / podman: manifest.json, plain layers.
    DockerArchive,
    /// containerd `ctr images import`, k3s agent/images, Docker 23+: OCI layout, zstd layers.
    OciArchive,
}

#[derive(clap::Args)]
struct ExtractArgs {
    bundle: PathBuf,
    /// Further volumes of the bundle kept elsewhere (the rest are found beside it).
    #[arg(value_name = "VOLUME")]
    more: Vec<PathBuf>,
    #[command(flatten)]
    trust: TrustArgs,
    /// The platform to write (default: the detected one).
    #[arg(long)]
    platform: Option<String>,
    #[arg(long, value_enum, default_value = "docker-archive")]
    format: ArchiveFormatArg,
    /// Output file.
    #[arg(short, long)]
    output: PathBuf,
    /// Only these images (logical names; repeatable).
    #[arg(long = "image", value_name = "NAME")]
    images: Vec<String>,
    /// Replace an existing output file.
    #[arg(long)]
    force: bool,
    #[arg(long)]
    json: bool,
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
    fn store(&self) -> Result<TrustStore, Error> {
        Ok(TrustStore::load(&self.keys, &trust::default_trust_dirs())?)
    }

    fn policy(&self) -> Result<TrustPolicy, Error> {
        Ok(TrustPolicy {
            store: self.store()?,
            allow_unsigned: self.allow_unsigned,
        })
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
    /// Name the images of a source: --name svc:v1.0=oci:build/svc. Default: the name
    /// the source gives, without its architecture suffix (svc:v1.0-arm64 → svc:v1.0).
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
    /// Compression threads (default, and 0: all cores). The output does not depend on it.
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
    /// Carry static archpack binaries for the bundle's platforms from this directory
    /// (archpack-linux-{amd64,arm64,arm-v7,arm-v6}, as scripts/build-targets.sh writes
    /// them), with `archpack-install` to put the right one in place on the target.
    #[arg(long, value_name = "DIR")]
    loaders: Option<PathBuf>,
    /// Loaders for these platforms instead of the bundle's (comma-separated).
    #[arg(long, value_name = "LIST", requires = "loaders")]
    loaders_for: Option<String>,
    /// Make a delta bundle: leave out every layer this base holds (an `archpack
    /// inventory` file from the site, or the bundle shipped there last); repeatable.
    #[arg(long = "base", value_name = "FILE")]
    bases: Vec<PathBuf>,
    /// In a delta, store changed layers whole instead of as patches against the base's.
    #[arg(long, requires = "bases")]
    no_patches: bool,
    /// The largest base layer a patch may refer to (applying a patch holds it in
    /// memory, with a window up to the layer's size); larger ones stay whole.
    #[arg(long, value_name = "SIZE", default_value = "40MiB")]
    patch_max_ref: String,
    /// Write volumes OUTPUT.001, OUTPUT.002, … of at most this size instead of one
    /// file: fat32 (4 GiB − 1 byte), or a size (700MiB, 4G; K/M/G are KiB/MiB/GiB).
    #[arg(long, value_name = "fat32|SIZE")]
    volume_size: Option<String>,
    /// Store once the file bytes that layers of different platforms share (the base
    /// system, Python's library…): a smaller bundle in format 2.2, which archpack reads
    /// as any other; for skopeo, `archpack join` writes the plain file back.
    #[arg(long, conflicts_with = "bases")]
    share_parts: bool,
    #[arg(long)]
    json: bool,
}

pub fn run() -> Result<ExitCode, Error> {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { 0 };
            let _ = e.print();
            return Ok(ExitCode::from(code));
        }
    };
    // serve stops on a signal itself (with a summary); everything else is cut short.
    if !matches!(cli.command, Command::Serve(_)) {
        remove_partials_on_interrupt();
    }
    let progress = render::Bars::new(cli.quiet);
    // The one place the engine's whereabouts are read.
    let endpoint = Endpoint::from_env()?;
    match cli.command {
        Command::Create(args) => create(args, endpoint, &progress),
        Command::Load(args) => load(args, endpoint, &progress),
        Command::Push(args) => push(args, &progress),
        Command::Serve(args) => serve(args, &progress),
        Command::Extract(args) => extract(args, endpoint, &progress),
        Command::Compose {
            bundle,
            more,
            trust,
            platform,
            output,
            force,
        } => {
            let to_stdout = output.as_os_str() == "-";
            let report = ops::compose::compose(&ops::compose::ComposeRequest {
                bundle: BundleInput::from_args(&bundle, &more),
                trust: trust.policy()?,
                endpoint,
                platform: platform.as_deref().map(parse_platform).transpose()?,
                output: (!to_stdout).then_some(output),
                force,
            })?;
            unsigned_warning(&report.signature);
            match &report.written {
                None => render::out_text(&report.text),
                Some(path) => render::out_line(&format!("wrote {}", path.display())),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect {
            bundle,
            json,
            trust,
        } => {
            let report = ops::inspect::inspect(&bundle, &trust.store()?)?;
            emit(json, None, &report, render::inspect)
        }
        Command::Inventory {
            output,
            name,
            platform,
            force,
            json,
        } => {
            let name = name
                .or_else(|| {
                    output
                        .as_ref()
                        .and_then(|o| o.file_stem())
                        .map(|s| s.to_string_lossy().into_owned())
                })
                .unwrap_or_else(host_name);
            let report = ops::inventory::inventory(&ops::inventory::InventoryRequest {
                endpoint,
                name,
                platform: platform.as_deref().map(parse_platform).transpose()?,
                output,
                force,
            })?;
            if json {
                render::out_text(&String::from_utf8_lossy(&report.rendered));
            } else {
                render::out_text(&render::inventory(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Platform {
            bundle,
            platform,
            json,
        } => {
            let report = ops::platform::platform(&ops::platform::PlatformRequest {
                endpoint,
                platform: platform.as_deref().map(parse_platform).transpose()?,
                bundle,
            })?;
            emit(json, None, &report, render::platform)
        }
        Command::Keygen {
            output: prefix,
            no_password,
            password_file,
            force,
        } => {
            let password = if no_password {
                None
            } else {
                Some(
                    read_password(password_file.as_deref(), true)?
                        .ok_or(TrustError::NoPasswordGiven)?,
                )
            };
            let files = ops::keygen::keygen(ops::keygen::KeygenRequest {
                prefix,
                password,
                force,
            })?;
            render::out_line(&format!(
                "key {}: secret {} (keep it offline), public {} (give it to the sites)",
                files.key_id,
                files.secret.display(),
                files.public.display()
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::Join {
            volume,
            more,
            output,
            force,
            json,
        } => {
            let report = ops::join::join(
                &ops::join::JoinRequest {
                    volumes: BundleInput::from_args(&volume, &more),
                    output,
                    force,
                },
                &progress,
            )?;
            emit(json, None, &report, render::join)
        }
        Command::Verify {
            bundle,
            more,
            trust,
            json,
        } => {
            let report = ops::verify::verify(
                &ops::verify::VerifyRequest {
                    bundle: BundleInput::from_args(&bundle, &more),
                    trust: trust.policy()?,
                },
                &progress,
            )?;
            emit(json, Some(&report.signature), &report, |r| {
                render::verify(&bundle, r)
            })
        }
    }
}

fn print_json<T: serde::Serialize>(report: &T) {
    // Serialising plain report structs cannot fail.
    render::out_line(&serde_json::to_string_pretty(report).unwrap_or_default());
}

/// SIGINT and SIGTERM end the process as the shell expects (exit 130 / 143), but first
/// remove the temporary file of whatever output was being written (a create stopped at
/// 2 a.m. must not leave gigabytes of hidden `.partial` on the stick), and the untagged
/// images a load in steps had put in so far.
fn remove_partials_on_interrupt() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let removed = archpack::fsutil::remove_partials();
            let taken_out = archpack::deliver::engine::pipeline::take_out_interrupted();
            let name = if signal == SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            eprintln!(
                "archpack: interrupted by {name}{}{}",
                if removed > 0 {
                    "; the unfinished output was removed, nothing was written in its place"
                } else {
                    ""
                },
                if taken_out > 0 {
                    format!("; the {taken_out} images the load had put in were taken out again")
                } else {
                    String::new()
                }
            );
            std::process::exit(128 + signal);
        }
    });
}

/// A report as `--json` or as text; the unsigned warning first where it applies.
fn emit<T: serde::Serialize>(
    json: bool,
    signature: Option<&ops::Signature>,
    report: &T,
    text: impl FnOnce(&T) -> String,
) -> Result<ExitCode, Error> {
    if let Some(s) = signature {
        unsigned_warning(s);
    }
    if json {
        print_json(report);
    } else {
        render::out_text(&text(report));
    }
    Ok(ExitCode::SUCCESS)
}

/// Says so on stderr when a bundle was accepted unsigned.
fn unsigned_warning(signature: &ops::Signature) {
    if *signature == ops::Signature::UnsignedAllowed {
        eprintln!(
            "archpack: warning: the bundle is NOT signed; accepted because of --allow-unsigned"
        );
    }
}

fn load(args: LoadArgs, endpoint: Endpoint, progress: &render::Bars) -> Result<ExitCode, Error> {
    let report = ops::load::load(
        &ops::load::LoadRequest {
            bundle: BundleInput::from_args(&args.bundle, &args.more),
            trust: args.trust.policy()?,
            endpoint,
            platform: args.platform.as_deref().map(parse_platform).transpose()?,
            images: args.images.clone(),
            dry_run: args.dry_run,
            compose_out: args.compose_out.clone(),
            force: args.force,
            up_timeout: (args.up && !args.dry_run).then_some(args.up_timeout),
            bases: args.bases.clone(),
        },
        progress,
    )?;
    emit(args.json, Some(&report.signature), &report, render::load)
}

fn push(args: PushArgs, progress: &render::Bars) -> Result<ExitCode, Error> {
    let (username, password) = if args.password_stdin {
        let mut p = String::new();
        std::io::stdin()
            .read_line(&mut p)
            .map_err(|error| TrustError::PasswordRead {
                from: "from standard input".into(),
                error,
            })?;
        (
            args.username.clone(),
            Some(p.trim_end_matches(['\n', '\r']).to_string()),
        )
    } else {
        // What `docker login` stored, as the docker CLI would find it.
        let (host, _) = registry::parse_target(&args.target)?;
        match registry::stored_credentials(&host) {
            Some((u, p)) => (Some(u), Some(p)),
            None => (None, None),
        }
    };
    let report = ops::push::push(
        &ops::push::PushRequest {
            bundle: BundleInput::from_args(&args.bundle, &args.more),
            trust: args.trust.policy()?,
            platforms: args.platform.as_deref().map(parse_platforms).transpose()?,
            images: args.images.clone(),
            options: registry::PushOptions {
                target: args.target.clone(),
                insecure: args.insecure,
                ca_certs: args.ca_certs.clone(),
                username,
                password,
                layer_format: match args.layer_format {
                    LayerFormatArg::Gzip => registry::LayerFormat::Gzip,
                    LayerFormatArg::Zstd => registry::LayerFormat::Zstd,
                },
                gzip_threads: cores(),
                digest_cache: archpack::deliver::gzip::default_digest_cache(),
            },
        },
        progress,
    )?;
    emit(args.json, Some(&report.signature), &report, render::push)
}

fn serve(args: ServeArgs, progress: &render::Bars) -> Result<ExitCode, Error> {
    use archpack::deliver::serve::{self as served, LayerChoice};
    let prepared = ops::serve::prepare(
        &ops::serve::ServeRequest {
            bundles: args
                .bundles
                .iter()
                .map(|b| BundleInput::from_arg(b))
                .collect(),
            trust: args.trust.policy()?,
            prefix: args.prefix.clone(),
            layers: match args.layer_format {
                ServeLayerFormatArg::Auto => LayerChoice::Auto,
                ServeLayerFormatArg::Gzip => LayerChoice::Gzip,
                ServeLayerFormatArg::Zstd => LayerChoice::Zstd,
            },
            gzip_threads: cores(),
            digest_cache: archpack::deliver::gzip::default_digest_cache(),
        },
        progress,
    )?;
    for s in &prepared.signatures {
        if s.signature == ops::Signature::UnsignedAllowed {
            eprintln!(
                "archpack: warning: {} is NOT signed; served because of --allow-unsigned",
                s.bundle
            );
        }
    }
    let (stopper, stop) = served::stop_signal();
    stop_on_signal(stopper);
    let summary = ops::serve::run(
        prepared,
        &served::ServeOptions {
            listen: args.listen.clone(),
            tls: match (&args.tls_cert, &args.tls_key) {
                (Some(cert), Some(key)) => Some(served::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            max_transfers: usize::from(args.max_transfers),
            gzip_threads: cores(),
            gzip_keep_in: archpack::deliver::gzip::default_cache_dir(),
            grace: std::time::Duration::from_secs(args.grace),
        },
        std::sync::Arc::new(render::AccessLog { json: args.json }),
        stop,
    )?;
    if args.json {
        render::out_line(&serde_json::json!({"event": "stopped", "summary": summary}).to_string());
    } else {
        render::out_line(render::serve_summary(&summary).trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

/// The first SIGINT/SIGTERM stops the server (requests under way may finish); a second
/// one ends the process at once.
fn stop_on_signal(stopper: archpack::deliver::serve::Stopper) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        let mut signals = signals.forever();
        if signals.next().is_some() {
            stopper.stop();
        }
        if let Some(signal) = signals.next() {
            std::process::exit(128 + signal);
        }
    });
}

fn extract(
    args: ExtractArgs,
    endpoint: Endpoint,
    progress: &render::Bars,
) -> Result<ExitCode, Error> {
    let report = ops::extract::extract(
        &ops::extract::ExtractRequest {
            bundle: BundleInput::from_args(&args.bundle, &args.more),
            trust: args.trust.policy()?,
            endpoint,
            platform: args.platform.as_deref().map(parse_platform).transpose()?,
            format: match args.format {
                ArchiveFormatArg::DockerArchive => ops::extract::ArchiveFormat::DockerArchive,
                ArchiveFormatArg::OciArchive => ops::extract::ArchiveFormat::OciArchive,
            },
            output: args.output.clone(),
            images: args.images.clone(),
            force: args.force,
        },
        progress,
    )?;
    emit(args.json, Some(&report.signature), &report, render::extract)
}

/// This host's name (an inventory's default name).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "site".into())
}

/// Cores to use by default (1 when the system will not say).
fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn create(
    args: CreateArgs,
    endpoint: Endpoint,
    progress: &render::Bars,
) -> Result<ExitCode, Error> {
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for n in &args.names {
        let (logical, src) = n
            .split_once('=')
            .ok_or_else(|| RequestError::NameWithoutSource(n.clone()))?;
        if !args.sources.iter().any(|s| s == src) {
            return Err(RequestError::NameForNoSource {
                given: n.clone(),
                source_ref: src.to_string(),
            }
            .into());
        }
        names.insert(src.to_string(), logical.to_string());
    }
    let sources = args
        .sources
        .iter()
        .map(|s| {
            Ok(ops::create::SourceSpec {
                reference: SourceRef::parse(s)?,
                text: s.clone(),
                name: names.get(s).cloned(),
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
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
    let bundle_name = args.bundle_name.clone().unwrap_or_else(|| {
        args.output
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "bundle".into())
    });
    let threads = match args.threads {
        None | Some(0) => u32::try_from(cores()).unwrap_or(u32::MAX),
        Some(n) => n,
    };
    let report = ops::create::create(
        &ops::create::CreateRequest {
            sources,
            output: args.output.clone(),
            force: args.force,
            level: args.level,
            threads,
            bundle_name,
            created: source_date_epoch()?,
            platforms: args.platform.as_deref().map(parse_platforms).transpose()?,
            compose: read_compose(&args)?,
            signer: signer
                .as_ref()
                .map(|s| s as &dyn archpack::format::IndexSigner),
            endpoint,
            loaders: match &args.loaders {
                Some(dir) => Some(ops::create::LoaderRequest {
                    dir: dir.clone(),
                    platforms: args
                        .loaders_for
                        .as_deref()
                        .map(parse_platforms)
                        .transpose()?,
                }),
                None => None,
            },
            bases: args.bases.clone(),
            volume_size: args
                .volume_size
                .as_deref()
                .map(|v| {
                    if v.eq_ignore_ascii_case("fat32") {
                        Ok(archpack_format::volumes::FAT32_MAX_FILE)
                    } else {
                        parse_size("--volume-size", v)
                    }
                })
                .transpose()?,
            share_parts: args.share_parts,
            patch_max_reference: if args.no_patches {
                None
            } else {
                Some(parse_size("--patch-max-ref", &args.patch_max_ref)?)
            },
        },
        progress,
    )?;
    emit(args.json, None, &report, render::create)
}

/// A size as people write it: bytes, or K/KiB, M/MiB, G/GiB, T/TiB (powers of 1024,
/// any case). KB/MB/GB are refused: half the world reads them as powers of 1000.
pub fn parse_size(option: &'static str, given: &str) -> Result<u64, RequestError> {
    let bad = |why: &str| RequestError::BadSize {
        option,
        given: given.to_string(),
        why: why.to_string(),
    };
    let text = given.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| bad("expected a number of bytes, or one with K/KiB, M/MiB, G/GiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        "kb" | "mb" | "gb" | "tb" => return Err(bad(
            "say KiB, MiB or GiB (powers of 1024), or give the bytes: KB/MB/GB are read both ways",
        )),
        _ => return Err(bad("unknown unit (K/KiB, M/MiB, G/GiB, T/TiB)")),
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| bad("too large"))
}

fn read_compose(args: &CreateArgs) -> Result<Option<ComposeFiles>, Error> {
    let Some(template) = &args.compose else {
        if !args.compose_overrides.is_empty() {
            return Err(RequestError::OverrideWithoutTemplate.into());
        }
        return Ok(None);
    };
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|error| RequestError::Read {
            what: "compose file",
            path: p.to_path_buf(),
            error,
        })
    };
    let mut files = ComposeFiles {
        template: read(template)?,
        overrides: BTreeMap::new(),
    };
    for o in &args.compose_overrides {
        let (platform, path) = o
            .split_once('=')
            .ok_or_else(|| RequestError::BadOverride(o.clone()))?;
        let platform: Platform = parse_platform(platform)?;
        files
            .overrides
            .insert(platform.to_string(), read(Path::new(path))?);
    }
    Ok(Some(files))
}

/// The password from --password-file, ARCHPACK_PASSWORD, or a terminal prompt (in
/// that order). Never echoed.
fn read_password(file: Option<&Path>, confirm: bool) -> Result<Option<String>, Error> {
    if let Some(f) = file {
        let text = std::fs::read_to_string(f).map_err(|error| TrustError::PasswordRead {
            from: format!("file {}", f.display()),
            error,
        })?;
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
    let prompt = |text: &str| {
        rpassword::prompt_password(text).map_err(|error| TrustError::PasswordRead {
            from: "from the terminal".into(),
            error,
        })
    };
    let pw = prompt("Password for the secret key: ")?;
    if confirm && prompt("The same password again: ")? != pw {
        return Err(TrustError::PasswordMismatch.into());
    }
    Ok(Some(pw))
}

/// SOURCE_DATE_EPOCH (reproducible builds) or now.
fn source_date_epoch() -> Result<u64, Error> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| RequestError::BadSourceDateEpoch(v.clone()).into()),
        _ => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)),
    }
}

/// One line: the error and its causes.
pub fn render_error(err: &Error) -> String {
    let mut s = err.to_string();
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}
