//! Compose: one template plus per-platform overrides in the bundle; on the target, the
//! file for the chosen platform, meaning exactly what
//! `docker compose -f template -f override config` means, with every image the bundle
//! carries pinned (`image`, `platform`, `pull_policy: never`).
//!
//! Merging follows the compose specification's rules: mappings merge recursively;
//! `command`, `entrypoint` and `healthcheck.test` are replaced; `environment`, `labels`,
//! `sysctls`, `annotations` merge as mappings (list form `K=V` too);
//! `ports` merge by value, `volumes` by container path, `secrets`/`configs` by source;
//! other sequences append values not already present.

use crate::platform::Platform;
use archpack_format::{BundleIndex, ComposeFiles, PlannedImage};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Template and override files above this size are refused before parsing.
pub const MAX_COMPOSE_BYTES: usize = archpack_format::limits::MAX_COMPOSE_BYTES as usize;

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("compose {file}: not valid YAML: {detail}")]
    Yaml { file: String, detail: String },
    #[error("compose {file}: {detail}")]
    Invalid { file: String, detail: String },
    #[error("compose {file}: {size} bytes, over the 1 MiB limit for a compose file")]
    TooLarge { file: String, size: usize },
    #[error("compose service {service}: image {image:?} is not in the bundle, and nothing can be pulled on the target (the bundle has: {available})")]
    MissingImage {
        service: String,
        image: String,
        available: String,
    },
    #[error(
        "compose service {service}: the bundle has {image} only for {offered}, not for {platform}"
    )]
    MissingPlatform {
        service: String,
        image: String,
        platform: String,
        offered: String,
    },
    #[error("compose override for {0}: the bundle has no image for that platform")]
    UnknownOverride(String),
    #[error("the bundle has no compose template (create it with --compose FILE)")]
    NoTemplate,
}

/// What the bundle carries for compose to refer to: logical name → its platforms and
/// the tags it was packed from.
#[derive(Debug, Clone, Default)]
pub struct Carried {
    pub images: BTreeMap<String, CarriedImage>,
}

#[derive(Debug, Clone, Default)]
pub struct CarriedImage {
    pub platforms: Vec<Platform>,
    pub aliases: Vec<String>,
}

impl Carried {
    /// What a bundle index carries.
    pub fn from_index(index: &BundleIndex) -> Carried {
        let mut c = Carried::default();
        for image in &index.images {
            let e = c.images.entry(image.name.clone()).or_default();
            for p in &image.platforms {
                e.platforms.push(p.platform.clone());
                e.aliases.extend(p.source_tags.iter().cloned());
            }
        }
        c
    }

    /// What a create plan will carry.
    pub fn from_plan(plan: &[PlannedImage]) -> Carried {
        let mut c = Carried::default();
        for p in plan {
            let e = c.images.entry(p.logical.clone()).or_default();
            e.platforms.push(p.platform.clone());
            e.aliases.extend(p.source_tags.iter().cloned());
        }
        c
    }

    /// The logical name an image reference resolves to, by name or packed-from tag.
    fn resolve(&self, reference: &str) -> Option<&str> {
        let with_tag = crate::reference::familiar(reference);
        self.images
            .iter()
            .find(|(name, img)| **name == with_tag || img.aliases.contains(&with_tag))
            .map(|(name, _)| name.as_str())
    }

    fn names(&self) -> String {
        self.images.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn parse(file: &str, text: &str) -> Result<Map<String, Value>, ComposeError> {
    if text.len() > MAX_COMPOSE_BYTES {
        return Err(ComposeError::TooLarge {
            file: file.to_string(),
            size: text.len(),
        });
    }
    // Tags are refused, not dropped: compose's `!reset` and `!override` change what a
    // merge means, and reading past them would render a file compose reads otherwise.
    let options = serde_saphyr::options! { reject_unsupported_tags: true };
    let value: Value = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let mut detail = e.to_string().lines().next().unwrap_or("").to_string();
        if detail.contains("unsupported tag") {
            detail.push_str(
                " (archpack does not merge compose's !reset/!override yet: write the value \
                 out in full in the override, or change it in the template)",
            );
        }
        ComposeError::Yaml {
            file: file.to_string(),
            detail,
        }
    })?;
    let Value::Object(map) = value else {
        return Err(ComposeError::Invalid {
            file: file.to_string(),
            detail: "the top level is not a mapping".into(),
        });
    };
    if let Some(services) = map.get("services") {
        let Value::Object(services) = services else {
            return Err(ComposeError::Invalid {
                file: file.to_string(),
                detail: "`services` is not a mapping".into(),
            });
        };
        for (name, service) in services {
            if !service.is_object() {
                return Err(ComposeError::Invalid {
                    file: file.to_string(),
                    detail: format!("service {name} is not a mapping"),
                });
            }
            if service.get("extends").is_some() {
                return Err(ComposeError::Invalid {
                    file: file.to_string(),
                    detail: format!(
                        "service {name} uses `extends`, which a bundle cannot carry (inline it)"
                    ),
                });
            }
        }
    }
    Ok(map)
}

/// The override text for `platform`: an exact key first, then one for the same
/// os/architecture.
fn override_for<'a>(files: &'a ComposeFiles, platform: &Platform) -> Option<(&'a str, &'a str)> {
    let keyed: Vec<(Platform, &String, &String)> = files
        .overrides
        .iter()
        .filter_map(|(k, v)| k.parse::<Platform>().ok().map(|p| (p, k, v)))
        .collect();
    keyed
        .iter()
        .find(|(p, _, _)| p == platform)
        .or_else(|| keyed.iter().find(|(p, _, _)| p.same_arch(platform)))
        .map(|(_, k, v)| (k.as_str(), v.as_str()))
}

/// Template merged with the platform's override, unpinned.
pub fn merged(
    files: &ComposeFiles,
    platform: &Platform,
) -> Result<Map<String, Value>, ComposeError> {
    let mut base = parse("template", &files.template)?;
    if let Some((key, text)) = override_for(files, platform) {
        let over = parse(&format!("override {key}"), text)?;
        merge_top(&mut base, over);
    }
    Ok(base)
}

/// Checks at `create` time: every file parses, every override names a platform the
/// bundle has, and every service image of every platform's file is carried.
pub fn validate(files: &ComposeFiles, carried: &Carried) -> Result<(), ComposeError> {
    let all: Vec<Platform> = {
        let mut v: Vec<Platform> = carried
            .images
            .values()
            .flat_map(|i| i.platforms.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    for key in files.overrides.keys() {
        let p: Platform = key
            .parse()
            .map_err(|_| ComposeError::UnknownOverride(key.clone()))?;
        if !all.iter().any(|a| a.same_arch(&p)) {
            return Err(ComposeError::UnknownOverride(key.clone()));
        }
    }
    parse("template", &files.template)?;
    for platform in &all {
        let doc = merged(files, platform)?;
        pin(doc, carried, &|_: &str| Some(platform.clone()), "")?;
    }
    Ok(())
}

/// The compose file for a host: merged for `platform`, each carried service image
/// pinned to its logical name with the platform `chosen` gives it.
pub fn render(
    files: &ComposeFiles,
    carried: &Carried,
    platform: &Platform,
    chosen: &dyn Fn(&str) -> Option<Platform>,
    header: &str,
) -> Result<String, ComposeError> {
    let doc = merged(files, platform)?;
    pin(doc, carried, chosen, header)
}

fn pin(
    mut doc: Map<String, Value>,
    carried: &Carried,
    chosen: &dyn Fn(&str) -> Option<Platform>,
    header: &str,
) -> Result<String, ComposeError> {
    if let Some(Value::Object(services)) = doc.get_mut("services") {
        for (name, service) in services.iter_mut() {
            let Value::Object(service) = service else {
                continue;
            };
            let Some(image) = service
                .get("image")
                .and_then(|v| v.as_str())
                .map(String::from)
            else {
                if service.contains_key("build") {
                    return Err(ComposeError::Invalid {
                        file: "template".into(),
                        detail: format!("service {name} has `build` but no image: nothing can be built on the target; name a bundled image"),
                    });
                }
                continue;
            };
            let Some(logical) = carried.resolve(&image) else {
                return Err(ComposeError::MissingImage {
                    service: name.clone(),
                    image,
                    available: carried.names(),
                });
            };
            let offered = &carried.images[logical].platforms;
            let missing = |platform: String| ComposeError::MissingPlatform {
                service: name.clone(),
                image: logical.to_string(),
                platform,
                offered: offered
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            let Some(platform) = chosen(logical) else {
                return Err(missing("this host".into()));
            };
            if !offered.contains(&platform) {
                return Err(missing(platform.to_string()));
            }
            service.insert("image".into(), Value::String(logical.to_string()));
            service.insert("platform".into(), Value::String(platform.to_string()));
            service.insert("pull_policy".into(), Value::String("never".into()));
            service.shift_remove("build");
        }
    }
    let yaml = serde_saphyr::to_string(&Value::Object(doc)).map_err(|e| ComposeError::Invalid {
        file: "output".into(),
        detail: e.to_string(),
    })?;
    Ok(format!("{header}{yaml}"))
}

fn merge_top(base: &mut Map<String, Value>, over: Map<String, Value>) {
    for (key, value) in over {
        match (key.as_str(), base.get_mut(&key), value) {
            ("services", Some(Value::Object(b)), Value::Object(o)) => {
                for (name, svc) in o {
                    match (b.get_mut(&name), svc) {
                        (Some(Value::Object(bs)), Value::Object(os)) => merge_service(bs, os),
                        (_, svc) => {
                            b.insert(name, svc);
                        }
                    }
                }
            }
            (_, Some(Value::Object(b)), Value::Object(o)) => merge_maps(b, o),
            (_, _, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn merge_maps(base: &mut Map<String, Value>, over: Map<String, Value>) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Object(b)), Value::Object(o)) => merge_maps(b, o),
            (Some(Value::Array(b)), Value::Array(o)) => append_unique(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

const REPLACED: &[&str] = &["command", "entrypoint"];
const MAPPING_LISTS: &[&str] = &["environment", "labels", "sysctls", "annotations"];

fn merge_service(base: &mut Map<String, Value>, over: Map<String, Value>) {
    for (key, value) in over {
        let k = key.as_str();
        if REPLACED.contains(&k) {
            base.insert(key, value);
            continue;
        }
        if MAPPING_LISTS.contains(&k) {
            // Merged in place: the key keeps its position in the template.
            let slot = base.entry(key).or_insert(Value::Null);
            let mut merged = as_mapping(std::mem::take(slot));
            for (mk, mv) in as_mapping(value) {
                merged.insert(mk, mv);
            }
            *slot = Value::Object(merged);
            continue;
        }
        match (k, base.get_mut(k), value) {
            ("healthcheck", Some(Value::Object(b)), Value::Object(o)) => {
                for (hk, hv) in o {
                    // `test` is a command: replaced, not appended.
                    if hk == "test" {
                        b.insert(hk, hv);
                    } else {
                        merge_maps(b, [(hk, hv)].into_iter().collect());
                    }
                }
            }
            ("volumes", Some(Value::Array(b)), Value::Array(o)) => {
                merge_by_key(b, o, volume_target)
            }
            ("secrets" | "configs", Some(Value::Array(b)), Value::Array(o)) => {
                merge_by_key(b, o, source_key)
            }
            ("depends_on", Some(b), o) if b.is_object() || o.is_object() => {
                let mut m = depends_map(std::mem::take(b));
                for (dk, dv) in depends_map(o) {
                    m.insert(dk, dv);
                }
                *b = Value::Object(m);
            }
            (_, Some(Value::Object(b)), Value::Object(o)) => merge_maps(b, o),
            (_, Some(Value::Array(b)), Value::Array(o)) => append_unique(b, o),
            (_, _, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn append_unique(base: &mut Vec<Value>, over: Vec<Value>) {
    for v in over {
        if !base.contains(&v) {
            base.push(v);
        }
    }
}

fn merge_by_key(base: &mut Vec<Value>, over: Vec<Value>, key: fn(&Value) -> Option<String>) {
    for v in over {
        match key(&v).and_then(|k| base.iter().position(|b| key(b).as_deref() == Some(&k))) {
            Some(i) => base[i] = v,
            None => base.push(v),
        }
    }
}

/// Container path of a volume: long syntax `target`, short `src:target[:mode]` or `target`.
fn volume_target(v: &Value) -> Option<String> {
    match v {
        Value::Object(m) => m.get("target").and_then(|t| t.as_str()).map(String::from),
        Value::String(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            Some(match parts.as_slice() {
                [target] => target.to_string(),
                [_, target, ..] => target.to_string(),
                [] => return None,
            })
        }
        _ => None,
    }
}

fn source_key(v: &Value) -> Option<String> {
    match v {
        Value::Object(m) => m.get("source").and_then(|t| t.as_str()).map(String::from),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// `[K=V, K2]` or `{K: V}` as a mapping (a bare `K` maps to null, as compose reads it).
fn as_mapping(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        Value::Array(items) => items
            .into_iter()
            .filter_map(|i| match i {
                Value::String(s) => Some(match s.split_once('=') {
                    Some((k, v)) => (k.to_string(), Value::String(v.to_string())),
                    None => (s, Value::Null),
                }),
                _ => None,
            })
            .collect(),
        _ => Map::new(),
    }
}

fn depends_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        Value::Array(items) => items
            .into_iter()
            .filter_map(|i| i.as_str().map(String::from))
            .map(|s| (s, serde_json::json!({"condition": "service_started"})))
            .collect(),
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carried() -> Carried {
        let mut c = Carried::default();
        c.images.insert(
            "svc:v1.0".into(),
            CarriedImage {
                platforms: vec![
                    "linux/amd64".parse().unwrap(),
                    "linux/arm64".parse().unwrap(),
                ],
                aliases: vec!["svc:v1.0-amd64".into(), "svc:v1.0-arm64".into()],
            },
        );
        c
    }

    fn files(template: &str, arm: &str) -> ComposeFiles {
        ComposeFiles {
            template: template.into(),
            overrides: [("linux/arm64/v8".to_string(), arm.to_string())].into(),
        }
    }

    #[test]
    fn merges_by_the_spec_rules_and_pins() {
        let f = files(
            "services:\n  app:\n    image: svc:v1.0-amd64\n    command: [a, b]\n    environment: [THREADS=8, MODE=x]\n    ports: ['8080:8080']\n    volumes: ['data:/data', '/etc/x:/etc/x:ro']\n    healthcheck:\n      test: [CMD, true]\n      start_period: 5s\n",
            "services:\n  app:\n    command: [c]\n    environment:\n      THREADS: '2'\n    ports: ['9090:9090']\n    volumes: ['fast:/data']\n    healthcheck:\n      test: [CMD, sh, -c, 'true']\n      start_period: 60s\n",
        );
        let arm: Platform = "linux/arm64".parse().unwrap();
        let out = render(&f, &carried(), &arm, &|_| Some(arm.clone()), "# h\n").unwrap();
        let v: Value = serde_saphyr::from_str(&out).unwrap();
        let app = &v["services"]["app"];
        assert_eq!(app["image"], "svc:v1.0");
        assert_eq!(app["platform"], "linux/arm64/v8");
        assert_eq!(app["pull_policy"], "never");
        assert_eq!(app["command"], serde_json::json!(["c"]));
        assert_eq!(
            app["environment"],
            serde_json::json!({"THREADS": "2", "MODE": "x"})
        );
        assert_eq!(app["ports"], serde_json::json!(["8080:8080", "9090:9090"]));
        assert_eq!(
            app["volumes"],
            serde_json::json!(["fast:/data", "/etc/x:/etc/x:ro"])
        );
        assert_eq!(
            app["healthcheck"]["test"],
            serde_json::json!(["CMD", "sh", "-c", "true"])
        );
        assert_eq!(app["healthcheck"]["start_period"], "60s");
        assert!(out.starts_with("# h\n"));
    }

    #[test]
    fn reset_and_override_tags_are_refused_not_dropped() {
        for arm in [
            "services:\n  svc:\n    ports: !reset []\n",
            "services:\n  svc:\n    environment: !override\n      B: \"2\"\n",
        ] {
            let template = "services:\n  svc:\n    image: svc:v1.0\n    ports: [\"8080:80\"]\n";
            let e = validate(&files(template, arm), &carried())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("unsupported tag") && e.contains("!reset/!override"),
                "{e}"
            );
        }
    }

    #[test]
    fn unknown_images_and_bad_yaml_are_reported() {
        let f = files("services:\n  app:\n    image: postgres:16\n", "");
        assert!(matches!(
            validate(&f, &carried()),
            Err(ComposeError::MissingImage { .. })
        ));
        let f = files("services: [\n", "");
        assert!(matches!(
            validate(&f, &carried()),
            Err(ComposeError::Yaml { .. })
        ));
        let f = ComposeFiles {
            template: "services: {}\n".into(),
            overrides: [("linux/s390x".to_string(), "services: {}\n".to_string())].into(),
        };
        assert!(matches!(
            validate(&f, &carried()),
            Err(ComposeError::UnknownOverride(_))
        ));
    }
}

/// The comment block at the top of a generated file.
pub fn header(index: &BundleIndex, platform: &Platform) -> String {
    let over = index
        .compose
        .as_ref()
        .and_then(|f| override_for(f, platform).map(|(k, _)| k.to_string()));
    format!(
        "# Generated by {} from bundle {:?} (created {}) for {platform}.\n# The bundle's compose template{}; images pinned to the bundle's, never pulled.\n# Edit the template in the bundle, not this file.\n",
        crate::tool_string(),
        index.name,
        index.created,
        match over {
            Some(k) => format!(" merged with its override for {k}"),
            None => String::new(),
        }
    )
}

/// A compose v2 command line: the `docker compose` plugin or the `docker-compose` binary.
pub fn find_compose() -> Option<Vec<String>> {
    let works = |cmd: &[&str]| {
        std::process::Command::new(cmd[0])
            .args(&cmd[1..])
            .arg("version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    [&["docker", "compose"][..], &["docker-compose"][..]]
        .into_iter()
        .find(|c| works(c))
        .map(|c| c.iter().map(|s| s.to_string()).collect())
}

/// One service's state after `up`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceState {
    pub service: String,
    pub state: String,
    pub health: String,
}

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("neither `docker compose` nor `docker-compose` (compose v2) is installed; install one, or start the services yourself with the written file")]
    NoCompose,
    #[error("running {command}: {error}")]
    Spawn {
        command: String,
        error: std::io::Error,
    },
    #[error("{command} failed: {detail}")]
    Failed { command: String, detail: String },
}

/// The compose project a bundle's services run under: its name in the characters
/// compose accepts (lowercase letters, digits, `-`, `_`).
pub fn project_name(bundle_name: &str) -> String {
    bundle_name.to_lowercase().replace(
        |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
        "-",
    )
}

/// `compose up -d --wait` on `file`, then each service's state and health.
pub fn up(
    file: &std::path::Path,
    project: &str,
    timeout_secs: u64,
    endpoint: &crate::docker::Endpoint,
) -> Result<Vec<ServiceState>, UpError> {
    let compose = find_compose().ok_or(UpError::NoCompose)?;
    let run = |args: &[&str]| -> Result<std::process::Output, UpError> {
        let command = format!("{} {}", compose.join(" "), args.join(" "));
        let mut cmd = std::process::Command::new(&compose[0]);
        // The same engine archpack loaded into: its context, or its host (TLS settings
        // travel in the inherited environment).
        match &endpoint.context {
            Some(context) => cmd.env_remove("DOCKER_HOST").env("DOCKER_CONTEXT", context),
            None => cmd.env("DOCKER_HOST", &endpoint.host),
        };
        cmd.args(&compose[1..])
            .arg("-f")
            .arg(file)
            .args(["-p", project])
            .args(args)
            .output()
            .map_err(|error| UpError::Spawn {
                command: command.clone(),
                error,
            })
    };
    let timeout = timeout_secs.to_string();
    let out = run(&["up", "-d", "--wait", "--wait-timeout", &timeout])?;
    let ps = || -> Result<Vec<ServiceState>, UpError> {
        let states = run(&["ps", "--all", "--format", "json"])?;
        Ok(String::from_utf8_lossy(&states.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .flat_map(|v| match v {
                Value::Array(items) => items,
                other => vec![other],
            })
            .map(|v| ServiceState {
                service: v["Service"].as_str().unwrap_or("?").to_string(),
                state: v["State"].as_str().unwrap_or("?").to_string(),
                health: v["Health"].as_str().unwrap_or("").to_string(),
            })
            .collect())
    };
    // `up --wait` has returned; the engine may still report a moment-old state.
    let settled = |s: &[ServiceState]| {
        s.iter().all(|x| {
            x.state == "exited"
                || (x.state == "running"
                    && (x.health.is_empty() || x.health == "healthy" || x.health == "unhealthy"))
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout_secs);
    let mut services = ps()?;
    while out.status.success() && !settled(&services) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(500));
        services = ps()?;
    }
    if !out.status.success() {
        return Err(UpError::Failed {
            command: format!("{} up", compose.join(" ")),
            detail: String::from_utf8_lossy(&out.stderr)
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string(),
        });
    }
    Ok(services)
}
