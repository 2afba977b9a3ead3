//! What the CLI prints: progress bars on stderr, tables and JSON on stdout.

use archpack::bundle::{BundleReader, CreateReport};
use archpack::engine::{EngineState, LoadPlan};
use archpack::extract::Selected;
use archpack::platform::Platform;
use archpack::probe::{self, DecidedBy, Decision, ProbeInputs};
use archpack::progress::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
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

pub fn create_summary(report: &CreateReport) -> String {
    let index = &report.index;
    let pairs: usize = index.images.iter().map(|i| i.platforms.len()).sum();
    let platforms: Vec<String> = index.platforms().iter().map(|p| p.to_string()).collect();
    format!(
        "wrote {}: {} image{} ({} image×platform) for {}; {} on disk from {} of layers read, dedup saved {}{}\n",
        report.path.display(),
        index.images.len(),
        if index.images.len() == 1 { "" } else { "s" },
        pairs,
        platforms.join(", "),
        human_bytes(report.bundle_bytes),
        human_bytes(report.layer_bytes_in),
        human_bytes(index.size_summary().saved_bytes),
        if report.signed { "; signed" } else { "; unsigned" }
    )
}

/// What `inspect` says about the signature.
pub enum Signer {
    Unsigned,
    Trusted(String),
    Untrusted(String),
    Bad(String, String),
}

impl Signer {
    fn describe(&self) -> String {
        match self {
            Signer::Unsigned => "no".into(),
            Signer::Trusted(k) => format!("key {k} (trusted here)"),
            Signer::Untrusted(k) => format!(
                "key {k} (NOT trusted here: add its .pub with --trust or to a trust.d directory)"
            ),
            Signer::Bad(k, e) => format!("key {k}: BAD SIGNATURE: {e}"),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Signer::Unsigned => serde_json::Value::Null,
            Signer::Trusted(k) => json!({"keyId": k, "trusted": true}),
            Signer::Untrusted(k) => json!({"keyId": k, "trusted": false}),
            Signer::Bad(k, e) => json!({"keyId": k, "trusted": false, "error": e}),
        }
    }
}

pub fn inspect_table(reader: &BundleReader, signer: &Signer) -> String {
    let index = &reader.index;
    let sizes = index.size_summary();
    let mut out = String::new();
    out.push_str(&format!("Bundle:   {}\n", reader.path.display()));
    out.push_str(&format!(
        "Name:     {}  ({}, written by {})\n",
        index.name, index.format, index.tool
    ));
    out.push_str(&format!("Created:  {}\n", index.created));
    out.push_str(&format!("Signed:   {}\n", signer.describe()));
    out.push_str(&format!(
        "Size:     {} on disk; {} of layers shared between images/platforms (saved {})\n",
        human_bytes(reader.file_len),
        human_bytes(sizes.shared_bytes),
        human_bytes(sizes.saved_bytes)
    ));
    if let Some(compose) = &index.compose {
        let overrides: Vec<&str> = compose.overrides.keys().map(String::as_str).collect();
        out.push_str(&format!(
            "Compose:  template{}\n",
            if overrides.is_empty() {
                String::new()
            } else {
                format!(" + overrides for {}", overrides.join(", "))
            }
        ));
    }
    let rows: Vec<[String; 6]> = index
        .images
        .iter()
        .flat_map(|image| {
            image.platforms.iter().map(move |p| {
                [
                    image.name.clone(),
                    p.platform.to_string(),
                    human_bytes(index.entry_bytes(p)),
                    p.layers.len().to_string(),
                    p.config.short(),
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
    out
}

fn table(headers: &[&str; 6], rows: &[[String; 6]]) -> String {
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

pub fn inspect_json(reader: &BundleReader, signer: &Signer) -> serde_json::Value {
    let index = &reader.index;
    let sizes = index.size_summary();
    json!({
        "bundle": reader.path,
        "name": index.name,
        "format": index.format,
        "tool": index.tool,
        "created": index.created,
        "bytes": reader.file_len,
        "signed": reader.signature.is_some(),
        "signer": signer.json(),
        "sharedBytes": sizes.shared_bytes,
        "dedupSavedBytes": sizes.saved_bytes,
        "platforms": index.platforms().iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "images": index.images.iter().map(|image| json!({
            "name": image.name,
            "index": image.index,
            "platforms": image.platforms.iter().map(|p| json!({
                "platform": p.platform.to_string(),
                "imageId": p.config,
                "manifest": p.manifest,
                "bytes": index.entry_bytes(p),
                "layers": p.layers.len(),
                "sourceTags": p.source_tags,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "compose": index.compose.as_ref().map(|c| json!({
            "overrides": c.overrides.keys().collect::<Vec<_>>(),
        })),
    })
}

pub fn platform_text(
    inputs: Option<&ProbeInputs>,
    decision: &Decision,
    chosen: Option<&Platform>,
) -> String {
    let mut out = format!("{}\n", decision.platform);
    let mark = |by: DecidedBy| {
        if decision.decided_by == by {
            "   <- decides"
        } else {
            ""
        }
    };
    let mut row = |label: &str, value: String| out.push_str(&format!("  {label:<24} {value}\n"));
    if let Some(inputs) = inputs {
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
            match inputs.userland {
                Some(e) => format!("{e}{}", mark(DecidedBy::Userland)),
                None => "unreadable".into(),
            },
        );
        if let Some(cpu) = probe::cpu_summary(inputs) {
            row("cpu", cpu);
        }
    } else {
        row("override", format!("--platform {}", decision.platform));
    }
    row(
        "fallbacks",
        decision
            .compatible
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    );
    for note in &decision.notes {
        row("note", note.clone());
    }
    if let Some(p) = chosen {
        row("bundle would load", p.to_string());
    }
    out
}

pub fn platform_json(
    inputs: Option<&ProbeInputs>,
    decision: &Decision,
    chosen: Option<&Platform>,
) -> serde_json::Value {
    json!({
        "platform": decision.platform.to_string(),
        "decidedBy": decision.decided_by,
        "compatible": decision.compatible.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "notes": decision.notes,
        "inputs": inputs.map(|i| json!({
            "kernel": i.kernel,
            "engine": i.engine,
            "engineError": i.engine_error,
            "userland": i.userland.map(|e| e.to_string()),
            "cpu": probe::cpu_summary(i),
        })),
        "bundlePlatform": chosen.map(|p| p.to_string()),
    })
}

/// The result of `load` (or of `load --dry-run`).
pub struct LoadReport<'a> {
    pub decision: &'a Decision,
    pub selected: &'a [Selected<'a>],
    pub plan: &'a LoadPlan,
    pub state: &'a EngineState,
    pub dry_run: bool,
    pub archive_bytes_sent: u64,
    pub bundle_bytes_read: u64,
    pub signer: String,
}

impl LoadReport<'_> {
    fn status(&self, s: &Selected) -> &'static str {
        match (
            self.plan.skip.images.contains(&s.entry.config),
            self.dry_run,
        ) {
            (true, _) => "already present",
            (false, true) => "would load",
            (false, false) => "loaded",
        }
    }

    pub fn text(&self) -> String {
        let rows: Vec<[String; 6]> = self
            .selected
            .iter()
            .map(|s| {
                [
                    s.image.name.clone(),
                    s.entry.platform.to_string(),
                    s.entry.config.short(),
                    self.status(s).to_string(),
                    s.tags().join(","),
                    String::new(),
                ]
            })
            .collect();
        let decided_by = serde_json::to_value(self.decision.decided_by)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let mut out = format!(
            "host platform {} (decided by {decided_by}); {}\n\n",
            self.decision.platform, self.signer
        );
        out.push_str(&table(
            &["IMAGE", "PLATFORM", "IMAGE ID", "STATUS", "TAGS", ""],
            &rows,
        ));
        out.push_str(&format!(
            "\n{} {} in {} ({} already present{}); read {} of the bundle\n",
            if self.dry_run { "would send" } else { "sent" },
            human_bytes(if self.dry_run {
                self.plan.bytes_to_send
            } else {
                self.archive_bytes_sent
            }),
            plural(self.plan.layers_to_send, "layer"),
            plural(self.plan.layers_present, "layer"),
            match &self.state.full_uploads {
                Some(why) => format!("; every layer is sent: {why}"),
                None => String::new(),
            },
            human_bytes(self.bundle_bytes_read),
        ));
        if let Some(free) = self.plan.free_space {
            out.push_str(&format!(
                "engine root {}: {} free, about {} needed\n",
                self.state.root_dir.as_deref().unwrap_or("?"),
                human_bytes(free),
                human_bytes(archpack::engine::space_needed(self.plan))
            ));
        }
        out
    }

    pub fn json(&self) -> serde_json::Value {
        json!({
            "platform": self.decision.platform.to_string(),
            "decidedBy": self.decision.decided_by,
            "dryRun": self.dry_run,
            "signer": self.signer,
            "images": self.selected.iter().map(|s| json!({
                "name": s.image.name,
                "platform": s.entry.platform.to_string(),
                "imageId": s.entry.config,
                "status": self.status(s),
                "tags": s.tags(),
            })).collect::<Vec<_>>(),
            "bytesToSend": self.plan.bytes_to_send,
            "archiveBytesSent": self.archive_bytes_sent,
            "layersToSend": self.plan.layers_to_send,
            "layersPresent": self.plan.layers_present,
            "bundleBytesRead": self.bundle_bytes_read,
            "fullUploads": self.state.full_uploads,
            "freeSpace": self.plan.free_space,
            "engineRoot": self.state.root_dir,
        })
    }
}

pub fn services_table(services: &[archpack::compose::ServiceState]) -> String {
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
