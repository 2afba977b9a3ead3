//! Table-driven probe cases from real hosts' `/proc/cpuinfo` and `uname -m` (first
//! core shown; the probe reads the first block and every `CPU part`).

use super::*;

const PI_ZERO_W: &str = "processor\t: 0
model name\t: ARMv6-compatible processor rev 7 (v6l)
BogoMIPS\t: 997.08
Features\t: half thumb fastmult vfp edsp java tls
CPU implementer\t: 0x41
CPU architecture: 7
CPU variant\t: 0x0
CPU part\t: 0xb76
CPU revision\t: 7

Hardware\t: BCM2835
Revision\t: 9000c1
Model\t\t: Raspberry Pi Zero W Rev 1.1
";

/// Raspberry Pi OS 32-bit on a Pi 3 B+: 64-bit kernel, cpuinfo as a 32-bit process sees it.
const PI3_32BIT: &str = "processor\t: 0
model name\t: ARMv8 Processor rev 4 (v8l)
BogoMIPS\t: 38.40
Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt lpae evtstrm crc32
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd03
CPU revision\t: 4

Hardware\t: BCM2835
Revision\t: a020d3
Model\t\t: Raspberry Pi 3 Model B Plus Rev 1.3
";

const PI4_64BIT: &str = "processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

Revision\t: c03114
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
";

const PI5: &str = "processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1

Revision\t: d04170
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
";

/// AWS Graviton2 (Neoverse N1): AArch32 at EL0.
const GRAVITON2: &str = "processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1
";

/// AWS Graviton4 (Neoverse V2): AArch64 only.
const GRAVITON4: &str = "processor\t: 0
BogoMIPS\t: 2000.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svebf16 i8mm bf16 dgh rng bti
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd4f
CPU revision\t: 1
";

/// Ampere Altra (Neoverse N1 cores).
const AMPERE_ALTRA: &str = "processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1
";

/// AmpereOne: Ampere's own cores, AArch64 only.
const AMPERE_ONE: &str = "processor\t: 0
BogoMIPS\t: 2000.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg dcpodp flagm2 frint i8mm bf16 rng bti ecv
CPU implementer\t: 0xc0
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xac3
CPU revision\t: 0
";

/// Intel Xeon X5650 (Westmere): x86-64-v2.
const X86_V2: &str = "processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 44
model name\t: Intel(R) Xeon(R) CPU           X5650  @ 2.67GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc arch_perfmon pebs bts rep_good nopl xtopology nonstop_tsc cpuid aperfmperf pni pclmulqdq dtes64 monitor ds_cpl vmx smx est tm2 ssse3 cx16 xtpr pdcm pcid dca sse4_1 sse4_2 popcnt aes lahf_lm epb pti ssbd ibrs ibpb stibp tpr_shadow vnmi flexpriority ept vpid dtherm ida arat flush_l1d
";

/// Intel Core i7-8700 (Coffee Lake): x86-64-v3.
const X86_V3: &str = "processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 158
model name\t: Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc art arch_perfmon pebs bts rep_good nopl xtopology nonstop_tsc cpuid aperfmperf pni pclmulqdq dtes64 monitor ds_cpl vmx smx est tm2 ssse3 sdbg fma cx16 xtpr pdcm pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand lahf_lm abm 3dnowprefetch cpuid_fault epb invpcid_single pti ssbd ibrs ibpb stibp tpr_shadow vnmi flexpriority ept vpid ept_ad fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid mpx rdseed adx smap clflushopt intel_pt xsaveopt xsavec xgetbv1 xsaves dtherm ida arat pln pts hwp hwp_notify hwp_act_window hwp_epp md_clear flush_l1d
";

/// Intel Xeon Platinum 8175M (Skylake-SP, AWS m5): x86-64-v4.
const X86_V4: &str = "processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 85
model name\t: Intel(R) Xeon(R) Platinum 8175M CPU @ 2.50GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid aperfmperf tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor lahf_lm abm 3dnowprefetch invpcid_single pti fsgsbase tsc_adjust bmi1 hle avx2 smep bmi2 erms invpcid rtm mpx avx512f avx512dq rdseed adx smap clflushopt clwb avx512cd avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves ida arat pku ospke
";

/// Intel Atom N270 netbook: 32-bit only.
const X86_32: &str = "processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 28
model name\t: Intel(R) Atom(TM) CPU N270   @ 1.60GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat clflush dts acpi mmx fxsr sse sse2 ss ht tm pbe nx constant_tsc arch_perfmon pebs bts pni dtes64 monitor ds_cpl est tm2 ssse3 xtpr pdcm movbe lahf_lm dtherm
";

const ELF32_ARM: ElfIdent = ElfIdent {
    class: 32,
    little_endian: true,
    machine: EM_ARM,
};
const ELF64_ARM: ElfIdent = ElfIdent {
    class: 64,
    little_endian: true,
    machine: EM_AARCH64,
};
const ELF64_X86: ElfIdent = ElfIdent {
    class: 64,
    little_endian: true,
    machine: EM_X86_64,
};
const ELF32_X86: ElfIdent = ElfIdent {
    class: 32,
    little_endian: true,
    machine: EM_386,
};

fn host(kernel: &str, cpuinfo: &str, userland: ElfIdent, engine: Option<&str>) -> ProbeInputs {
    ProbeInputs {
        kernel: Some(kernel.into()),
        cpuinfo: Some(cpuinfo.into()),
        userland: Some(userland),
        cpuid_amd64_level: None,
        engine: engine.map(|arch| EngineFacts {
            os: "linux".into(),
            arch: arch.into(),
            kernel_arch: Some(kernel.into()),
        }),
        engine_error: None,
    }
}

fn strings(ps: &[Platform]) -> Vec<String> {
    ps.iter().map(|p| p.to_string()).collect()
}

#[test]
fn real_hosts_decide_the_right_platform() {
    struct Case {
        name: &'static str,
        inputs: ProbeInputs,
        platform: &'static str,
        by: DecidedBy,
        compatible: &'static [&'static str],
    }
    let cases = [
        Case {
            name: "Pi Zero W, Raspberry Pi OS 32-bit, armhf engine",
            inputs: host("armv6l", PI_ZERO_W, ELF32_ARM, Some("arm")),
            platform: "linux/arm/v6",
            by: DecidedBy::Engine,
            compatible: &["linux/arm/v6", "linux/arm/v5"],
        },
        Case {
            name: "Pi 3 B+ on 32-bit OS: 64-bit kernel, 32-bit userland and engine",
            inputs: host("aarch64", PI3_32BIT, ELF32_ARM, Some("arm")),
            platform: "linux/arm/v7",
            by: DecidedBy::Engine,
            compatible: &["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"],
        },
        Case {
            name: "Pi 3 B+ on 32-bit OS, engine not running: userland beats kernel",
            inputs: host("aarch64", PI3_32BIT, ELF32_ARM, None),
            platform: "linux/arm/v7",
            by: DecidedBy::Userland,
            compatible: &["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"],
        },
        Case {
            name: "Pi 4 on 64-bit OS",
            inputs: host("aarch64", PI4_64BIT, ELF64_ARM, Some("arm64")),
            platform: "linux/arm64/v8",
            by: DecidedBy::Engine,
            compatible: &[
                "linux/arm64/v8",
                "linux/arm/v7",
                "linux/arm/v6",
                "linux/arm/v5",
            ],
        },
        Case {
            name: "Pi 5",
            inputs: host("aarch64", PI5, ELF64_ARM, Some("arm64")),
            platform: "linux/arm64/v8",
            by: DecidedBy::Engine,
            compatible: &[
                "linux/arm64/v8",
                "linux/arm/v7",
                "linux/arm/v6",
                "linux/arm/v5",
            ],
        },
        Case {
            name: "AWS Graviton2",
            inputs: host("aarch64", GRAVITON2, ELF64_ARM, Some("arm64")),
            platform: "linux/arm64/v8",
            by: DecidedBy::Engine,
            compatible: &[
                "linux/arm64/v8",
                "linux/arm/v7",
                "linux/arm/v6",
                "linux/arm/v5",
            ],
        },
        Case {
            name: "AWS Graviton4: no 32-bit mode",
            inputs: host("aarch64", GRAVITON4, ELF64_ARM, Some("arm64")),
            platform: "linux/arm64/v8",
            by: DecidedBy::Engine,
            compatible: &["linux/arm64/v8"],
        },
        Case {
            name: "Ampere Altra, no engine",
            inputs: host("aarch64", AMPERE_ALTRA, ELF64_ARM, None),
            platform: "linux/arm64/v8",
            by: DecidedBy::Userland,
            compatible: &[
                "linux/arm64/v8",
                "linux/arm/v7",
                "linux/arm/v6",
                "linux/arm/v5",
            ],
        },
        Case {
            name: "AmpereOne: no 32-bit mode",
            inputs: host("aarch64", AMPERE_ONE, ELF64_ARM, Some("arm64")),
            platform: "linux/arm64/v8",
            by: DecidedBy::Engine,
            compatible: &["linux/arm64/v8"],
        },
        Case {
            name: "x86-64-v2 Westmere",
            inputs: host("x86_64", X86_V2, ELF64_X86, Some("amd64")),
            platform: "linux/amd64/v2",
            by: DecidedBy::Engine,
            compatible: &["linux/amd64/v2", "linux/amd64", "linux/386"],
        },
        Case {
            name: "x86-64-v3 Coffee Lake",
            inputs: host("x86_64", X86_V3, ELF64_X86, Some("amd64")),
            platform: "linux/amd64/v3",
            by: DecidedBy::Engine,
            compatible: &[
                "linux/amd64/v3",
                "linux/amd64/v2",
                "linux/amd64",
                "linux/386",
            ],
        },
        Case {
            name: "x86-64-v4 Skylake-SP",
            inputs: host("x86_64", X86_V4, ELF64_X86, Some("amd64")),
            platform: "linux/amd64/v4",
            by: DecidedBy::Engine,
            compatible: &[
                "linux/amd64/v4",
                "linux/amd64/v3",
                "linux/amd64/v2",
                "linux/amd64",
                "linux/386",
            ],
        },
        Case {
            name: "32-bit x86 Atom, no engine, kernel only",
            inputs: ProbeInputs {
                kernel: Some("i686".into()),
                cpuinfo: Some(X86_32.into()),
                ..Default::default()
            },
            platform: "linux/386",
            by: DecidedBy::Kernel,
            compatible: &["linux/386"],
        },
        Case {
            name: "32-bit x86 userland on a 64-bit kernel",
            inputs: host("x86_64", X86_V3, ELF32_X86, None),
            platform: "linux/386",
            by: DecidedBy::Userland,
            compatible: &["linux/386"],
        },
    ];
    for case in cases {
        let d = decide(&case.inputs).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(d.platform.to_string(), case.platform, "{}", case.name);
        assert_eq!(d.decided_by, case.by, "{}", case.name);
        assert_eq!(strings(&d.compatible), case.compatible, "{}", case.name);
    }
}

#[test]
fn pi3_32bit_says_why_arm64_would_fail() {
    let d = decide(&host("aarch64", PI3_32BIT, ELF32_ARM, Some("arm"))).unwrap();
    assert!(d.notes.iter().any(|n| n.contains("exec format error")));
}

fn p(s: &str) -> Platform {
    s.parse().unwrap()
}

#[test]
fn matching_follows_the_fallback_order() {
    let pi3 = decide(&host("aarch64", PI3_32BIT, ELF32_ARM, Some("arm"))).unwrap();
    let offered = [p("linux/amd64"), p("linux/arm64"), p("linux/arm/v6")];
    assert_eq!(best_match(&pi3, &offered).unwrap(), p("linux/arm/v6"));
    let offered = [p("linux/arm/v6"), p("linux/arm/v7")];
    assert_eq!(best_match(&pi3, &offered).unwrap(), p("linux/arm/v7"));

    let zero = decide(&host("armv6l", PI_ZERO_W, ELF32_ARM, Some("arm"))).unwrap();
    let err = best_match(&zero, &[p("linux/arm/v7"), p("linux/arm64")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "this host runs linux/arm/v6 (can run: linux/arm/v6, linux/arm/v5); the bundle has only linux/arm/v7, linux/arm64/v8. Create the bundle with a linux/arm/v6 image, or pass --platform to force one"
    );

    let pi4 = decide(&host("aarch64", PI4_64BIT, ELF64_ARM, Some("arm64"))).unwrap();
    assert_eq!(
        best_match(&pi4, &[p("linux/arm/v7"), p("linux/amd64")]).unwrap(),
        p("linux/arm/v7")
    );
    let g4 = decide(&host("aarch64", GRAVITON4, ELF64_ARM, Some("arm64"))).unwrap();
    assert!(best_match(&g4, &[p("linux/arm/v7")]).is_err());

    // An image without a variant matches on os + architecture.
    let v3 = decide(&host("x86_64", X86_V3, ELF64_X86, Some("amd64"))).unwrap();
    let offered = [
        Platform {
            os: "linux".into(),
            architecture: "arm".into(),
            variant: None,
        },
        p("linux/amd64"),
    ];
    assert_eq!(best_match(&v3, &offered).unwrap(), p("linux/amd64"));
    assert_eq!(
        best_match(&v3, &[p("linux/amd64/v4"), p("linux/amd64/v2")]).unwrap(),
        p("linux/amd64/v2")
    );
    assert_eq!(best_match(&v3, &[p("linux/386")]).unwrap(), p("linux/386"));
}

#[test]
fn forced_platform_keeps_its_own_fallbacks() {
    let d = forced(&p("linux/arm/v7"));
    assert_eq!(d.decided_by, DecidedBy::Override);
    assert_eq!(
        strings(&d.compatible),
        ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]
    );
    assert_eq!(
        strings(&forced(&p("linux/arm64")).compatible),
        ["linux/arm64/v8"]
    );
}

#[test]
fn elf_headers_parse() {
    let mut head = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x03\0\x3e\0".to_vec();
    assert_eq!(ElfIdent::parse(&head), Some(ELF64_X86));
    head[4] = 1;
    head[18] = 40;
    assert_eq!(ElfIdent::parse(&head).unwrap().architecture(), Some("arm"));
    assert_eq!(ElfIdent::parse(b"#!/bin/sh\n"), None);
}

#[test]
fn live_probe_on_this_machine() {
    let inputs = collect_local();
    let d = decide(&inputs).unwrap();
    let native = if cfg!(target_arch = "x86_64") {
        "amd64"
    } else if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        return;
    };
    assert_eq!(d.platform.architecture, native);
    assert_eq!(d.decided_by, DecidedBy::Userland);
    if native == "amd64" {
        // CPUID and /proc/cpuinfo must agree on the level.
        let from_cpuinfo = CpuInfo::parse(inputs.cpuinfo.as_deref().unwrap()).amd64_level();
        assert_eq!(inputs.cpuid_amd64_level, from_cpuinfo);
    }
}
