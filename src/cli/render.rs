//! What the CLI prints: progress bars on stderr, reports as text on stdout (`--json`
//! prints the reports themselves).

use archpack::ops::create::CreateReport;
use archpack::ops::extract::ExtractReport;
use archpack::ops::inspect::InspectReport;
use archpack::ops::load::LoadReport;
use archpack::ops::platform::PlatformReport;
use archpack::ops::push::PushSummary;
use archpack::ops::verify::VerifyReport;
use archpack::platform::probe::DecidedBy;
use archpack::progress::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;

/// indicatif bars on stderr, only when stderr is a terminal and not `--quiet`.
pub struct Bars {
    enabled: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bars {
    pub fn new(quiet: bool) -> Bars {
        Bars {
            enabled: !quiet && std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
        }
    }
}

impl Progress for Bars {
    fn start(&self, label: &str, total: Option<u64>) {
        if !self.enabled {
            return;
        }
        let bar = match total {
            Some(t) => ProgressBar::new(t).with_style(
                ProgressStyle::with_template(
                    "{msg:>20} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{msg:>20} {spinner} {bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.set_message(label.to_string());
        if let Ok(mut b) = self.bar.lock() {
            *b = Some(bar);
        }
    }

    fn advance(&self, bytes: u64) {
        if let Ok(b) = self.bar.lock() {
            if let Some(bar) = b.as_ref() {
                bar.inc(bytes);
            }
        }
    }

    fn note(&self, message: &str) {
        if !self.enabled {
            return;
        }
        match self.bar.lock().ok().and_then(|b| b.clone()) {
            Some(bar) => bar.println(message),
            None => eprintln!("{message}"),
        }
    }

    fn finish(&self) {
        if let Ok(mut b) = self.bar.lock() {
            if let Some(bar) = b.take() {
                bar.finish_and_clear();
            }
        }
    }
}

/// "1 layer", "3 layers".
pub fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

pub fn create(report: &CreateReport) -> String {
    let mut out = String::new();
    for s in &report.sources {
        if !s.absent.is_empty() {
            out.push_str(&format!(
                "{}: took {}; left out (not there whole): {}\n",
                s.source,
                s.platforms.join(", "),
                s.absent.join("; ")
            ));
        } else if s.platforms.len() > 1 {
            out.push_str(&format!("{}: took {}\n", s.source, s.platforms.join(", ")));
        }
    }
    out.push_str(&format!(
        "wrote {}: {} image{} ({} image×platform) for {}; {} on disk from {} of layers read, dedup saved {}{}\n",
        report.path.display(),
        report.images,
        if report.images == 1 { "" } else { "s" },
        report.image_platforms,
        report.platforms.join(", "),
        human_bytes(report.bundle_bytes),
        human_bytes(report.layer_bytes_in),
        human_bytes(report.dedup_saved_bytes),
        if report.signed { "; signed" } else { "; unsigned" }
    ));
    if report.shared_part_bytes > 0 {
        out.push_str(&format!(
            "shared parts: {} that layers of several platforms carry alike, stored once (format 2.2)\n",
            human_bytes(report.shared_part_bytes)
        ));
    }
    if !report.volumes.is_empty() {
        out.push_str(&format!(
            "as {} volume{} (no file named {} was written):\n",
            report.volumes.len(),
            if report.volumes.len() == 1 { "" } else { "s" },
            report.path.display()
        ));
        for v in &report.volumes {
            out.push_str(&format!(
                "  {}  {}  [{}]\n",
                v.path.display(),
                human_bytes(v.bytes),
                v.group
            ));
        }
    }
    if let Some(d) = &report.delta {
        out.push_str(&format!(
            "delta against {}: {} layer{} left to the target ({} a full bundle would carry), {} patched ({} for {} of layers), {} whole\n",
            d.bases.join(", "),
            d.layers_required,
            if d.layers_required == 1 { "" } else { "s" },
            human_bytes(d.required_bytes),
            d.layers_patched,
            human_bytes(d.patch_bytes),
            human_bytes(d.patched_layer_bytes),
            d.layers_whole,
        ));
    }
    if !report.loaders.is_empty() {
        let each: Vec<String> = report
            .loaders
            .iter()
            .map(|l| format!("{} {}", l.platform, human_bytes(l.bytes)))
            .collect();
        let name = report
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // The installer reads the single file; from volumes a loader is taken out whole.
        let how = if report.volumes.is_empty() {
            format!("install with: tar -xf {name} archpack-install && sh archpack-install")
        } else {
            format!("in volumes, take one out of the volume holding it: tar -xf {name}.NNN archpack-loaders/archpack-linux-TARGET.gz && gunzip it (or join, then use archpack-install)")
        };
        out.push_str(&format!(
            "loaders: {} (of the bundle's {}); {how}\n",
            each.join(", "),
            human_bytes(report.bundle_bytes),
        ));
    }
    out
}

pub fn inspect(report: &InspectReport) -> String {
    let mut out = String::new();
    out.push_str(&format!("Bundle:   {}\n", report.bundle.display()));
    out.push_str(&format!(
        "Name:     {}  ({}, written by {})\n",
        report.name, report.format, report.tool
    ));
    out.push_str(&format!("Created:  {}\n", report.created));
    let signed = match &report.signer {
        None => "no".to_string(),
        Some(s) if s.trusted => format!("key {} (trusted here)", s.key_id),
        Some(s) => match &s.error {
            Some(e) => format!("key {}: BAD SIGNATURE: {e}", s.key_id),
            None => format!(
                "key {} (NOT trusted here: add its .pub with --trust or to a trust.d directory)",
                s.key_id
            ),
        },
    };
    out.push_str(&format!("Signed:   {signed}\n"));
    out.push_str(&format!(
        "Size:     {} on disk; {} of layers shared between images/platforms (saved {})\n",
        human_bytes(report.bytes),
        human_bytes(report.shared_bytes),
        human_bytes(report.dedup_saved_bytes)
    ));
    if let Some(v) = &report.volumes {
        if v.shared_part_bytes > 0 {
            out.push_str(&format!(
                "Parts:    {} that layers of several platforms share, stored once ({} joined: `archpack join` writes that file, for skopeo)\n",
                human_bytes(v.shared_part_bytes),
                human_bytes(v.joined_bytes)
            ));
        }
    }
    if let Some(v) = report.volumes.as_ref().filter(|v| v.cap.is_some()) {
        out.push_str(&format!(
            "Volumes:  {} of at most {} ({} joined)\n",
            v.files.len(),
            human_bytes(v.cap.unwrap_or_default()),
            human_bytes(v.joined_bytes)
        ));
        for f in &v.files {
            out.push_str(&format!(
                "  {}  {}  [{}]  {}\n",
                f.name,
                human_bytes(f.bytes),
                f.group,
                f.state
            ));
        }
        for (platform, names) in &v.needed_by {
            out.push_str(&format!("  {platform} needs: {}\n", names.join(", ")));
        }
    }
    if let Some(compose) = &report.compose {
        out.push_str(&format!(
            "Compose:  template{}\n",
            if compose.overrides.is_empty() {
                String::new()
            } else {
                format!(" + overrides for {}", compose.overrides.join(", "))
            }
        ));
    }
    let rows: Vec<[String; 6]> = report
        .images
        .iter()
        .flat_map(|image| {
            image.platforms.iter().map(move |p| {
                [
                    image.name.clone(),
                    p.platform.clone(),
                    human_bytes(p.bytes),
                    p.layers.to_string(),
                    short(&p.image_id),
                    p.source_tags.join(","),
                ]
            })
        })
        .collect();
    let headers = [
        "IMAGE",
        "PLATFORM",
        "SIZE",
        "LAYERS",
        "IMAGE ID",
        "PACKED FROM",
    ];
    out.push('\n');
    out.push_str(&table(&headers, &rows));
    if let Some(d) = &report.delta {
        out.push_str(&format!(
            "\nDelta made against {}: the target must hold {}; {} patched. extract and push need a full bundle.\n",
            d.made_against.join(", "),
            plural(d.required.len(), "layer"),
            plural(d.patches.len(), "layer"),
        ));
        let mut rows: Vec<[String; 5]> = d
            .required
            .iter()
            .map(|r| {
                [
                    "required".to_string(),
                    short(&r.diff_id),
                    human_bytes(r.bytes),
                    format!("held by {}", r.held_by.join(", ")),
                    r.used_by.join(", "),
                ]
            })
            .collect();
        rows.extend(d.patches.iter().map(|p| {
            [
                "patched".to_string(),
                short(&p.diff_id),
                format!(
                    "{} for {}",
                    human_bytes(p.patch_bytes),
                    human_bytes(p.layer_bytes)
                ),
                format!(
                    "against {} of {} (needs {} of memory)",
                    short(&p.reference),
                    p.reference_held_by,
                    human_bytes(p.memory)
                ),
                p.used_by.join(", "),
            ]
        }));
        out.push_str(&table(
            &["", "LAYER", "SIZE", "FROM THE BASE", "USED BY"],
            &rows,
        ));
    }
    if !report.loaders.is_empty() {
        let rows: Vec<[String; 6]> = report
            .loaders
            .iter()
            .map(|l| {
                [
                    l.platform.clone(),
                    human_bytes(l.bytes),
                    short(&l.binary_digest),
                    l.member.clone(),
                    String::new(),
                    String::new(),
                ]
            })
            .collect();
        out.push_str(
            "\nLoaders (install one: tar -xf BUNDLE archpack-install && sh archpack-install):\n",
        );
        out.push_str(&table(
            &["PLATFORM", "SIZE", "BINARY", "MEMBER", "", ""],
            &rows,
        ));
    }
    out
}

/// `sha256:0123456789ab` of a full digest string.
fn short(digest: &str) -> String {
    digest.chars().take("sha256:".len() + 12).collect()
}

fn table<const N: usize>(headers: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

pub fn platform(report: &PlatformReport) -> String {
    let mut out = format!("{}\n", report.platform);
    let mark = |by: DecidedBy| {
        if report.decided_by == by {
            "   <- decides"
        } else {
            ""
        }
    };
    let mut row = |label: &str, value: String| out.push_str(&format!("  {label:<24} {value}\n"));
    if let Some(inputs) = &report.inputs {
        row(
            "kernel (uname -m)",
            format!(
                "{}{}",
                inputs.kernel.as_deref().unwrap_or("?"),
                mark(DecidedBy::Kernel)
            ),
        );
        row(
            "engine (/version Arch)",
            match (&inputs.engine, &inputs.engine_error) {
                (Some(e), _) => format!("{}{}", e.arch, mark(DecidedBy::Engine)),
                (None, Some(err)) => format!("not asked: {err}"),
                (None, None) => "not asked".into(),
            },
        );
        row(
            "userland (/bin/sh ELF)",
            match &inputs.userland {
                Some(e) => format!("{e}{}", mark(DecidedBy::Userland)),
                None => "unreadable".into(),
            },
        );
        if let Some(cpu) = &inputs.cpu {
            row("cpu", cpu.clone());
        }
    } else {
        row("override", format!("--platform {}", report.platform));
    }
    row("fallbacks", report.compatible.join(", "));
    for note in &report.notes {
        row("note", note.clone());
    }
    if let Some(p) = &report.bundle_platform {
        row("bundle would load", p.clone());
    }
    out
}

pub fn load(report: &LoadReport) -> String {
    let rows: Vec<[String; 6]> = report
        .images
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                s.platform.clone(),
                short(&s.engine_id),
                s.status.clone(),
                s.tags.join(","),
                String::new(),
            ]
        })
        .collect();
    let decided_by = serde_json::to_value(report.decided_by)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let mut out = format!(
        "host platform {} (decided by {decided_by}); {}\n\n",
        report.platform, report.signer
    );
    out.push_str(&table(
        &["IMAGE", "PLATFORM", "IMAGE ID", "STATUS", "TAGS", ""],
        &rows,
    ));
    out.push_str(&format!(
        "\n{} {} in {} ({} already present{}){}; read {} of the bundle\n",
        if report.dry_run { "would send" } else { "sent" },
        human_bytes(if report.dry_run {
            report.bytes_to_send
        } else {
            report.archive_bytes_sent
        }),
        plural(report.layers_to_send, "layer"),
        plural(report.layers_present, "layer"),
        match &report.full_uploads {
            Some(why) if report.layers_to_send > 0 => {
                format!("; every layer of a missing image is sent: {why}")
            }
            _ => String::new(),
        },
        if report.concurrent_requests > 1 {
            format!(
                " as {} requests, up to {} at once",
                report.engine_requests, report.concurrent_requests
            )
        } else {
            String::new()
        },
        human_bytes(report.bundle_bytes_read),
    ));
    if let Some(d) = &report.delta {
        out.push_str(&format!(
            "delta against {}: {} of its layers already in the engine, {} read back from the engine, {} from --base, {} rebuilt from patches{}\n",
            d.made_against.join(", "),
            d.layers_in_engine,
            d.layers_from_engine,
            d.layers_from_base,
            d.layers_patched,
            if d.layers_patched > 0 {
                format!(" (up to {} of memory for one)", human_bytes(d.patch_memory))
            } else {
                String::new()
            }
        ));
    }
    if let Some(free) = report.free_space {
        out.push_str(&format!(
            "engine root {}: {} free, about {} needed\n",
            report.engine_root.as_deref().unwrap_or("?"),
            human_bytes(free),
            human_bytes(report.space_needed)
        ));
    }
    if let Some(services) = &report.services {
        out.push_str(&services_table(services));
    }
    out
}

pub fn inventory(report: &archpack::ops::inventory::InventoryReport) -> String {
    let inv = &report.inventory;
    let rows: Vec<[String; 4]> = inv
        .images
        .iter()
        .map(|i| {
            [
                if i.tags.is_empty() {
                    "<none>".to_string()
                } else {
                    i.tags.join(",")
                },
                i.platform.to_string(),
                short(&i.id.to_string()),
                i.diff_ids.len().to_string(),
            ]
        })
        .collect();
    let mut out = table(&["IMAGE", "PLATFORM", "IMAGE ID", "LAYERS"], &rows);
    out.push_str(&format!(
        "\n{}: {} on {} ({} store, {}); load would choose {}\n",
        inv.name,
        plural(report.images, "image"),
        plural(report.layers, "layer"),
        report.store,
        inv.engine.version,
        report.platform,
    ));
    match &report.path {
        Some(p) => out.push_str(&format!(
            "wrote {} ({}): on the build host, archpack create --base {} ... makes a delta for this site\n",
            p.display(),
            human_bytes(report.bytes),
            p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        )),
        None => out.push_str("write it with -o FILE (or print it with --json)\n"),
    }
    out
}

pub fn push(summary: &PushSummary) -> String {
    let report = &summary.pushed;
    let mut out = String::new();
    for image in &report.images {
        out.push_str(&format!(
            "{}  {}  index {}\n",
            image.reference,
            image.platforms.join(","),
            image.index_digest.short()
        ));
    }
    out.push_str(&format!(
        "uploaded {} blobs ({}), mounted {} across repositories, {} already there; {} gzip passes\n",
        report.blobs_uploaded,
        human_bytes(report.bytes_uploaded),
        report.blobs_mounted,
        report.blobs_present,
        report.gzip_passes
    ));
    out
}

pub fn verify(bundle: &std::path::Path, report: &VerifyReport) -> String {
    let mut out = format!(
        "{}: OK: {}; {} {}, {} verified\n",
        bundle.display(),
        report.signature,
        report.members,
        if report.volumes.is_empty() {
            "members"
        } else {
            "members or pieces"
        },
        human_bytes(report.bytes)
    );
    for v in &report.volumes {
        out.push_str(&format!(
            "  {}  {}  [{}]\n",
            v.path.display(),
            v.status,
            v.group
        ));
    }
    out
}

pub fn join(report: &archpack::ops::join::JoinReport) -> String {
    format!(
        "wrote {}: {} from {} volumes{}\n",
        report.output.display(),
        human_bytes(report.bytes),
        report.volumes,
        if report.signed {
            " (signed; the signature is checked when it is used)"
        } else {
            " (unsigned)"
        }
    )
}

pub fn extract(report: &ExtractReport) -> String {
    format!(
        "wrote {}: {} image{} for {}, {} layers, {}\n",
        report.output.display(),
        report.stats.images,
        if report.stats.images == 1 { "" } else { "s" },
        report.platforms.join(", "),
        report.stats.layers_sent,
        human_bytes(report.stats.bytes_written)
    )
}

fn services_table(services: &[archpack::compose::ServiceState]) -> String {
    let rows: Vec<[String; 6]> = services
        .iter()
        .map(|s| {
            [
                s.service.clone(),
                s.state.clone(),
                if s.health.is_empty() {
                    "(no healthcheck)".into()
                } else {
                    s.health.clone()
                },
                String::new(),
                String::new(),
                String::new(),
            ]
        })
        .collect();
    format!(
        "\n{}",
        table(&["SERVICE", "STATE", "HEALTH", "", "", ""], &rows)
    )
}

/// Text on standard output. A reader gone (`inspect | head`, `serve | head`) costs the
/// text, not a panic (exit 101) or the server.
pub fn out_text(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// A line on standard output (see [`out_text`]).
pub fn out_line(line: &str) {
    out_text(&format!("{line}\n"));
}

/// The access log of `serve`: one line per request, plain or JSON, on standard output.
pub struct AccessLog {
    pub json: bool,
}

impl archpack::deliver::serve::ServeEvents for AccessLog {
    fn listening(&self, l: &archpack::deliver::serve::Listening) {
        if self.json {
            out_line(&serde_json::json!({"event": "listening", "listening": l}).to_string());
            return;
        }
        let sets: Vec<&str> = l.layer_sets.iter().map(|s| s.as_str()).collect();
        let mut out = format!(
            "serving {} at {} (layers: {}{})\n",
            plural(l.images.len(), "image"),
            l.url,
            sets.join(" and "),
            if sets.len() > 1 {
                ", a tag resolving per client: zstd for Docker 23+, containerd 1.5+, podman and skopeo; gzip for the rest"
            } else {
                ""
            }
        );
        for i in &l.images {
            out.push_str(&format!(
                "  {}:{}  {}  from {}\n",
                i.repository,
                i.tag,
                i.platforms.join(","),
                i.bundle
            ));
        }
        for f in &l.faulty_members {
            out.push_str(&format!(
                "  FAULTY: {} member {}: {}; never served, and the platforms using it are not in the gzip set\n",
                f.bundle, f.member, f.detail
            ));
        }
        if l.gzip_passes > 0 {
            out.push_str(&format!(
                "  ({} compressed once to learn their gzip digests; remembered for next time)\n",
                plural(l.gzip_passes, "layer")
            ));
        }
        out_line(out.trim_end());
    }

    fn request(&self, e: &archpack::deliver::serve::AccessEntry) {
        if self.json {
            out_line(&serde_json::json!({"event": "request", "request": e}).to_string());
            return;
        }
        let mut line = format!(
            "{} {} \"{} {}\" {} {} {}ms",
            e.time, e.client, e.method, e.path, e.status, e.bytes, e.ms
        );
        if let Some(set) = e.layers {
            line.push_str(&format!(" [{}]", set.as_str()));
        }
        if let Some(err) = &e.error {
            line.push_str(&format!(" error: {err}"));
        }
        out_line(&line);
    }
}

pub fn serve_summary(summary: &archpack::ops::serve::ServeSummary) -> String {
    let r = &summary.served;
    let mut out = format!(
        "stopped after {:.0} s: {} answered ({} sent), {} client errors, {} server errors{}\n",
        r.seconds,
        plural(r.requests as usize, "request"),
        human_bytes(r.bytes_sent),
        r.client_errors,
        r.server_errors,
        if r.cut_at_stop > 0 {
            format!(", {} cut at stop", plural(r.cut_at_stop, "connection"))
        } else {
            String::new()
        }
    );
    if r.gzip_encodings + r.gzip_cache_hits > 0 {
        out.push_str(&format!(
            "  gzip: {} made, {} answered from kept ones\n",
            plural(r.gzip_encodings as usize, "encoding"),
            r.gzip_cache_hits
        ));
    }
    for b in &r.by_bundle {
        out.push_str(&format!(
            "  {}: {}, {}\n",
            b.bundle,
            plural(b.requests as usize, "request"),
            human_bytes(b.bytes)
        ));
    }
    for f in &r.faulty_members {
        out.push_str(&format!(
            "  FAULTY: {} member {}: {} (never served; check it with archpack verify)\n",
            f.bundle, f.member, f.detail
        ));
    }
    out
}
