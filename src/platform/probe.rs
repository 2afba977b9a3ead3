//! Host platform probe: what can this host's engine really run?
//!
//! `uname -m` is not enough: Raspberry Pi OS 32-bit runs a 64-bit kernel under a 32-bit
//! userland and engine (needs arm/v7, not arm64); Pi 1/Zero report CPU architecture 7 but
//! are ARMv6; amd64 hosts have micro-architecture levels. Collection ([`collect`]) is
//! kept apart from the decision ([`decide`]), a pure function tested on real hosts' data.
//!
//! Precedence for the architecture: the engine's own `/version` Arch (what it runs),
//! else the userland's ELF (`/bin/sh`), else the kernel's `uname -m`. The variant comes
//! from `/proc/cpuinfo` (ARM) or CPUID (amd64 levels).

use crate::platform::{normalize_arch, Platform};
use serde::Serialize;
use std::fmt;

/// Everything the decision looks at, as collected on a host (or recorded from one).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProbeInputs {
    /// `uname -m` (kernel machine).
    pub kernel: Option<String>,
    /// `/proc/cpuinfo` text.
    #[serde(skip)]
    pub cpuinfo: Option<String>,
    /// ELF identity of the userland (`/bin/sh`).
    pub userland: Option<ElfIdent>,
    /// amd64 micro-architecture level from CPUID (2, 3, 4), when probed live.
    pub cpuid_amd64_level: Option<u32>,
    /// The engine, when reachable.
    pub engine: Option<EngineFacts>,
    /// Why the engine was not asked, when it was not.
    pub engine_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineFacts {
    /// `/version` Os and Arch: dockerd's own GOOS/GOARCH.
    pub os: String,
    pub arch: String,
    /// `/info` Architecture: the engine host's kernel machine (uname spelling).
    pub kernel_arch: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ElfIdent {
    /// 32 or 64.
    pub class: u8,
    pub little_endian: bool,
    /// `e_machine`.
    pub machine: u16,
}

const EM_386: u16 = 3;
const EM_ARM: u16 = 40;
const EM_PPC64: u16 = 21;
const EM_S390: u16 = 22;
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;
const EM_RISCV: u16 = 243;
const EM_LOONGARCH: u16 = 258;

impl ElfIdent {
    /// Parses the first 20 bytes of an ELF file.
    pub fn parse(head: &[u8]) -> Option<ElfIdent> {
        if head.len() < 20 || &head[..4] != b"\x7fELF" {
            return None;
        }
        let class = match head[4] {
            1 => 32,
            2 => 64,
            _ => return None,
        };
        let little_endian = head[5] == 1;
        let machine = if little_endian {
            u16::from_le_bytes([head[18], head[19]])
        } else {
            u16::from_be_bytes([head[18], head[19]])
        };
        Some(ElfIdent {
            class,
            little_endian,
            machine,
        })
    }

    /// The OCI architecture this ELF runs as.
    pub fn architecture(&self) -> Option<&'static str> {
        Some(match (self.machine, self.class) {
            (EM_X86_64, 64) => "amd64",
            (EM_386, 32) => "386",
            (EM_AARCH64, 64) => "arm64",
            (EM_ARM, 32) => "arm",
            (EM_PPC64, 64) if self.little_endian => "ppc64le",
            (EM_PPC64, 64) => "ppc64",
            (EM_S390, 64) => "s390x",
            (EM_RISCV, 64) => "riscv64",
            (EM_LOONGARCH, 64) => "loong64",
            _ => return None,
        })
    }
}

impl fmt::Display for ElfIdent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.machine {
            EM_X86_64 => "x86-64",
            EM_386 => "Intel 80386",
            EM_AARCH64 => "AArch64",
            EM_ARM => "ARM",
            EM_PPC64 => "PowerPC64",
            EM_S390 => "S/390",
            EM_RISCV => "RISC-V",
            EM_LOONGARCH => "LoongArch",
            _ => "machine",
        };
        write!(f, "ELF{} {name}", self.class)?;
        if !self.little_endian {
            write!(f, " (big endian)")?;
        }
        Ok(())
    }
}

/// Which input decided the architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DecidedBy {
    Engine,
    Userland,
    Kernel,
    /// `--platform` on the command line.
    Override,
}

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub platform: Platform,
    pub decided_by: DecidedBy,
    /// What the host can run, best first (starts with `platform`).
    pub compatible: Vec<Platform>,
    /// Why, in words, for `archpack platform`.
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    #[error("cannot tell this host's architecture: no engine, no readable /bin/sh, no uname; pass --platform")]
    Unknown,
    #[error("unsupported architecture {0:?}; pass --platform")]
    Unsupported(String),
    #[error("this host runs {host} (can run: {compatible}); the bundle has only {offered}. Create the bundle with a {host} image, or pass --platform to force one")]
    NoMatch {
        host: String,
        compatible: String,
        offered: String,
    },
}

/// The pure decision from collected inputs.
pub fn decide(inputs: &ProbeInputs) -> Result<Decision, ProbeError> {
    let mut notes = Vec::new();
    let kernel_arch = inputs.kernel.as_deref().map(normalize_arch);
    let userland_arch = inputs.userland.and_then(|e| e.architecture());
    let (arch, decided_by) = if let Some(engine) = &inputs.engine {
        (normalize_arch(&engine.arch).0, DecidedBy::Engine)
    } else if let Some(a) = userland_arch {
        (a.to_string(), DecidedBy::Userland)
    } else if let Some((a, _)) = &kernel_arch {
        (a.clone(), DecidedBy::Kernel)
    } else {
        return Err(ProbeError::Unknown);
    };
    if let (Some((k, _)), true) = (&kernel_arch, arch == "arm") {
        if k == "arm64" {
            notes.push("32-bit userland/engine on a 64-bit kernel: 32-bit arm images are needed, arm64 ones would fail with `exec format error`".into());
        }
    }
    let cpu = inputs
        .cpuinfo
        .as_deref()
        .map(CpuInfo::parse)
        .unwrap_or_default();
    let os = inputs
        .engine
        .as_ref()
        .map(|e| e.os.to_ascii_lowercase())
        .unwrap_or_else(|| "linux".into());
    let compatible: Vec<Platform> = match arch.as_str() {
        "arm" => {
            let level = arm_level(&cpu, &mut notes);
            (5..=level.min(7))
                .rev()
                .map(|v| Platform::new(&os, "arm", Some(&format!("v{v}"))))
                .collect()
        }
        "arm64" => {
            let mut v = vec![Platform::new(&os, "arm64", Some("v8"))];
            if cpu.runs_aarch32() {
                v.extend(
                    (5..=7)
                        .rev()
                        .map(|n| Platform::new(&os, "arm", Some(&format!("v{n}")))),
                );
            } else {
                notes.push("this CPU has no 32-bit (AArch32) mode: no arm/v7 fallback".into());
            }
            v
        }
        "amd64" => {
            let level = inputs
                .cpuid_amd64_level
                .or_else(|| cpu.amd64_level())
                .unwrap_or(1);
            let mut v: Vec<Platform> = (2..=level.min(4))
                .rev()
                .map(|n| Platform::new(&os, "amd64", Some(&format!("v{n}"))))
                .collect();
            v.push(Platform::new(&os, "amd64", None));
            v.push(Platform::new(&os, "386", None));
            v
        }
        "386" | "ppc64le" | "ppc64" | "s390x" | "riscv64" | "loong64" | "mips64le" => {
            vec![Platform::new(&os, &arch, None)]
        }
        other => return Err(ProbeError::Unsupported(other.to_string())),
    };
    let platform = compatible[0].clone();
    Ok(Decision {
        platform,
        decided_by,
        compatible,
        notes,
    })
}

/// The decision for an explicit `--platform`: that platform, and what it can run.
pub fn forced(platform: &Platform) -> Decision {
    let arch = platform.architecture.as_str();
    let level = platform.variant_level();
    let mut compatible = vec![platform.clone()];
    let lower = |arch: &str, from: u32, to: u32| -> Vec<Platform> {
        (to..from)
            .rev()
            .map(|n| Platform::new(&platform.os, arch, Some(&format!("v{n}"))))
            .collect()
    };
    match (arch, level) {
        ("arm", Some(n)) => compatible.extend(lower("arm", n, 5)),
        ("amd64", Some(n)) => {
            compatible.extend(lower("amd64", n, 2));
            compatible.push(Platform::new(&platform.os, "amd64", None));
        }
        _ => {}
    }
    Decision {
        platform: platform.clone(),
        decided_by: DecidedBy::Override,
        compatible,
        notes: vec!["--platform given: detection skipped".into()],
    }
}

/// Picks the best of `offered` for a host: the first compatible platform with an exact
/// match, or one that matches on os+architecture where the offer has no variant.
pub fn best_match(decision: &Decision, offered: &[Platform]) -> Result<Platform, ProbeError> {
    for want in &decision.compatible {
        if let Some(p) = offered.iter().find(|p| *p == want) {
            return Ok(p.clone());
        }
        if let Some(p) = offered
            .iter()
            .find(|p| p.variant.is_none() && p.same_arch(want))
        {
            return Ok(p.clone());
        }
    }
    let list = |ps: &[Platform]| {
        ps.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(ProbeError::NoMatch {
        host: decision.platform.to_string(),
        compatible: list(&decision.compatible),
        offered: if offered.is_empty() {
            "nothing".into()
        } else {
            list(offered)
        },
    })
}

/// The parts of /proc/cpuinfo that matter.
#[derive(Debug, Default, Clone)]
struct CpuInfo {
    /// `CPU architecture: 7` (ARM), as written (`8`, `7`, `5TEJ`).
    arm_architecture: Option<String>,
    model_name: Option<String>,
    implementer: Option<u32>,
    parts: Vec<u32>,
    /// x86 `flags`, or ARM `Features`.
    flags: Vec<String>,
}

impl CpuInfo {
    fn parse(text: &str) -> CpuInfo {
        let mut c = CpuInfo::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            let hex = |v: &str| u32::from_str_radix(v.trim_start_matches("0x"), 16).ok();
            match key {
                "CPU architecture" if c.arm_architecture.is_none() => {
                    c.arm_architecture = Some(value.to_string())
                }
                "model name" if c.model_name.is_none() => c.model_name = Some(value.to_string()),
                "CPU implementer" if c.implementer.is_none() => c.implementer = hex(value),
                "CPU part" => {
                    if let Some(p) = hex(value) {
                        if !c.parts.contains(&p) {
                            c.parts.push(p);
                        }
                    }
                }
                "flags" | "Features" if c.flags.is_empty() => {
                    c.flags = value.split_whitespace().map(String::from).collect()
                }
                _ => {}
            }
        }
        c
    }

    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// x86-64 micro-architecture level from the kernel's flag names.
    fn amd64_level(&self) -> Option<u32> {
        if self.flags.is_empty() {
            return None;
        }
        let all = |fs: &[&str]| fs.iter().all(|f| self.has(f));
        let v2 = all(&[
            "cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3",
        ]);
        let v3 = v2
            && all(&[
                "avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave",
            ]);
        let v4 = v3 && all(&["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"]);
        Some(if v4 {
            4
        } else if v3 {
            3
        } else if v2 {
            2
        } else {
            1
        })
    }

    /// Whether an arm64 CPU can run 32-bit code. AArch64-only cores are listed by
    /// (implementer, part); unknown cores are assumed able to, as containerd does.
    fn runs_aarch32(&self) -> bool {
        const AARCH64_ONLY: &[(u32, u32)] = &[
            (0x41, 0xd47), // Cortex-A715
            (0x41, 0xd48), // Cortex-X2
            (0x41, 0xd4d), // Cortex-A715
            (0x41, 0xd4e), // Cortex-X3
            (0x41, 0xd4f), // Neoverse V2 (Graviton4, Grace)
            (0x41, 0xd80), // Cortex-A520
            (0x41, 0xd81), // Cortex-A720
            (0x41, 0xd82), // Cortex-X4
            (0x41, 0xd84), // Neoverse V3
            (0x41, 0xd8e), // Neoverse N3
        ];
        match self.implementer {
            // Apple and AmpereOne cores have no AArch32.
            Some(0x61) | Some(0xc0) => false,
            Some(imp) => !self.parts.iter().any(|p| AARCH64_ONLY.contains(&(imp, *p))),
            None => true,
        }
    }
}

/// ARM architecture level (5–8) of a 32-bit arm host.
fn arm_level(cpu: &CpuInfo, notes: &mut Vec<String>) -> u32 {
    let model_v6 = cpu
        .model_name
        .as_deref()
        .is_some_and(|m| m.contains("ARMv6"));
    let declared = cpu
        .arm_architecture
        .as_deref()
        .and_then(|a| a.chars().next())
        .and_then(|c| c.to_digit(10));
    match declared {
        _ if model_v6 => {
            notes.push("model name says ARMv6-compatible (Raspberry Pi 1/Zero report CPU architecture 7): ARMv6".into());
            6
        }
        Some(n) if n >= 7 => 7,
        Some(n) => n.max(5),
        None => {
            notes.push("no CPU architecture in /proc/cpuinfo: assuming ARMv7".into());
            7
        }
    }
}

/// Collects the probe inputs on this host; `engine` facts are added by the caller.
pub fn collect_local() -> ProbeInputs {
    let uname = rustix::system::uname();
    let kernel = Some(uname.machine().to_string_lossy().into_owned());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok();
    let userland = read_elf_head("/bin/sh").and_then(|h| ElfIdent::parse(&h));
    ProbeInputs {
        kernel,
        cpuinfo,
        userland,
        cpuid_amd64_level: cpuid_amd64_level(),
        engine: None,
        engine_error: None,
    }
}

fn read_elf_head(path: &str) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut head = vec![0u8; 20];
    f.read_exact(&mut head).ok()?;
    Some(head)
}

#[cfg(target_arch = "x86_64")]
fn cpuid_amd64_level() -> Option<u32> {
    macro_rules! all {
        ($($f:tt),*) => { true $(&& std::arch::is_x86_feature_detected!($f))* };
    }
    let v2 = all!("cmpxchg16b", "popcnt", "sse3", "sse4.1", "sse4.2", "ssse3");
    // is_x86_feature_detected! checks OS support (XSAVE/YMM) for the AVX family.
    let v3 = v2 && all!("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "lzcnt", "movbe");
    let v4 = v3 && all!("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl");
    Some(if v4 {
        4
    } else if v3 {
        3
    } else if v2 {
        2
    } else {
        1
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn cpuid_amd64_level() -> Option<u32> {
    None
}

#[cfg(test)]
mod tests;

/// The engine's own platform facts (`/version` Os/Arch, `/info` Architecture).
pub fn engine_facts(
    engine: &crate::docker::Engine,
) -> Result<EngineFacts, crate::docker::EngineError> {
    let version = engine.version()?;
    let info = engine.info()?;
    Ok(EngineFacts {
        os: version.os.clone().unwrap_or_else(|| "linux".into()),
        arch: version.arch.clone().unwrap_or_default(),
        kernel_arch: info.architecture.clone(),
    })
}

/// Collects everything, the engine included when reachable (its absence is noted).
pub fn collect_with_engine(engine: Result<&crate::docker::Engine, String>) -> ProbeInputs {
    let mut inputs = collect_local();
    match engine.and_then(|e| engine_facts(e).map_err(|e| e.to_string())) {
        Ok(facts) if !facts.arch.is_empty() => inputs.engine = Some(facts),
        Ok(_) => inputs.engine_error = Some("the engine reported no architecture".into()),
        Err(e) => inputs.engine_error = Some(e),
    }
    inputs
}

/// One line on what the CPU information said, for `archpack platform`.
pub fn cpu_summary(inputs: &ProbeInputs) -> Option<String> {
    let cpu = CpuInfo::parse(inputs.cpuinfo.as_deref()?);
    if let Some(level) = inputs.cpuid_amd64_level {
        return Some(format!("x86-64-v{level} (CPUID)"));
    }
    if let Some(a) = &cpu.arm_architecture {
        let mut s = format!("CPU architecture {a}");
        if let Some(m) = cpu.model_name.as_deref().filter(|m| m.contains("ARMv6")) {
            s.push_str(&format!(", {m}"));
        }
        return Some(s);
    }
    cpu.amd64_level().map(|l| format!("x86-64-v{l} (flags)"))
}
