//! The registry view of bundles (SPEC-serve, "The registry view"): repository → tag →
//! image index, and digest → what answers it. Built once at start; it holds only names,
//! digests and the gzip set's small documents. Every byte of a bundle's own documents and
//! blobs stays in the bundle and is read (and checked) per request.

use super::ServeError;
use crate::deliver::gzip::{self, GzipDigestCache};
use crate::digest::Digest;
use crate::progress::Progress;
use crate::reference::ImageRef;
use archpack_format::{oci, BundleReader, Member};
use oci_spec::image::MediaType;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Media types of the documents served.
pub const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// A bundle being served: the label it is named by in logs and reports, and its reader.
pub struct ServedBundle {
    pub label: String,
    pub reader: BundleReader,
}

/// The two sets of documents a bundle can be served as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerSet {
    /// The bundle's own index, manifests and zstd layers, byte for byte.
    Zstd,
    /// Manifests naming gzip re-encodings of the layers (Docker 20.10, old containerd).
    Gzip,
}

impl LayerSet {
    /// As reports spell it (and as it serialises).
    pub fn as_str(self) -> &'static str {
        match self {
            LayerSet::Zstd => "zstd",
            LayerSet::Gzip => "gzip",
        }
    }
}

/// Which sets are served, and how a tag picks one (`--layer-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerChoice {
    /// Both; a tag resolves per client (its User-Agent).
    Auto,
    Gzip,
    Zstd,
}

impl LayerChoice {
    /// The sets served.
    pub fn sets(self) -> &'static [LayerSet] {
        match self {
            LayerChoice::Auto => &[LayerSet::Zstd, LayerSet::Gzip],
            LayerChoice::Gzip => &[LayerSet::Gzip],
            LayerChoice::Zstd => &[LayerSet::Zstd],
        }
    }

    fn serves(self, set: LayerSet) -> bool {
        self.sets().contains(&set)
    }

    /// The set a tag resolves to for a client that says it is `user_agent`.
    pub fn for_client(self, user_agent: Option<&str>) -> LayerSet {
        match self {
            LayerChoice::Gzip => LayerSet::Gzip,
            LayerChoice::Zstd => LayerSet::Zstd,
            LayerChoice::Auto => {
                if user_agent.is_some_and(takes_zstd) {
                    LayerSet::Zstd
                } else {
                    LayerSet::Gzip
                }
            }
        }
    }
}

/// Whether a client pulls zstd layers, by its User-Agent: Docker 23+ (`docker/23.0`),
/// containerd 1.5+, and the containers/image family (podman, skopeo, buildah, CRI-O).
/// Anything unknown gets gzip, which every client reads.
fn takes_zstd(user_agent: &str) -> bool {
    let version = |prefix: &str| -> Option<(u32, u32)> {
        let rest = user_agent.strip_prefix(prefix)?.trim_start_matches('v');
        let mut parts = rest
            .split(|c: char| !c.is_ascii_digit())
            .map(|p| p.parse::<u32>().ok());
        Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
    };
    if let Some(v) = version("docker/") {
        return v >= (23, 0);
    }
    if let Some(v) = version("containerd/") {
        return v >= (1, 5);
    }
    [
        "containers/",
        "skopeo/",
        "podman/",
        "libpod/",
        "buildah/",
        "cri-o/",
    ]
    .iter()
    .any(|p| user_agent.starts_with(p))
}

/// A document (image index or manifest) and where its bytes are.
#[derive(Debug, Clone)]
pub enum Document {
    /// A member of bundle `bundle` (its own index or manifest), read and checked per
    /// request.
    Member {
        bundle: usize,
        member: usize,
        media_type: &'static str,
    },
    /// Built at start (the gzip set).
    Built {
        bytes: bytes::Bytes,
        media_type: &'static str,
    },
}

/// A blob and where its bytes come from.
#[derive(Debug, Clone)]
pub enum Blob {
    /// A member's bytes as stored (configs, zstd layers).
    Stored { bundle: usize, member: usize },
    /// A layer member re-encoded as gzip: `size` bytes hashing to the blob's digest.
    Gzip {
        bundle: usize,
        member: usize,
        size: u64,
    },
}

impl Blob {
    /// The bundle and member its bytes come from.
    pub fn member(&self) -> (usize, usize) {
        match self {
            Blob::Stored { bundle, member } | Blob::Gzip { bundle, member, .. } => {
                (*bundle, *member)
            }
        }
    }
}

/// The image index each set served answers a tag with.
type IndexBySet = BTreeMap<LayerSet, Digest>;

#[derive(Debug, Default)]
struct Repository {
    tags: BTreeMap<String, IndexBySet>,
    /// Every document and blob reachable from the repository's tags.
    digests: HashSet<Digest>,
    /// Docker Hub's `library/X` for `X`: answered, not listed in the catalog.
    alias: bool,
}

/// One image as served, for the start report.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServedImage {
    pub bundle: String,
    pub name: String,
    pub repository: String,
    pub tag: String,
    pub platforms: Vec<String>,
    /// The image index per set served.
    pub indexes: IndexBySet,
    /// Platforms left out of the gzip set: a layer failed its check at start.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_in_gzip: Vec<String>,
}

pub struct RegistryView {
    pub bundles: Vec<ServedBundle>,
    pub choice: LayerChoice,
    pub images: Vec<ServedImage>,
    /// Layers gzip-compressed at start to learn their digests (0: all remembered).
    pub gzip_passes: usize,
    /// Layers that failed their check at start (by zstd digest): never served, and the
    /// platforms using them are left out of the gzip set.
    pub faulty: HashMap<Digest, super::FaultyMember>,
    repositories: BTreeMap<String, Repository>,
    documents: HashMap<Digest, Document>,
    blobs: HashMap<Digest, Blob>,
}

/// How to build a view.
pub struct ViewOptions<'a> {
    pub prefix: &'a str,
    pub choice: LayerChoice,
    pub gzip_threads: usize,
    pub digest_cache: Option<&'a std::path::Path>,
}

impl RegistryView {
    /// The view of `bundles` (opened and trusted by the caller). Refuses two bundles
    /// that answer one repository and tag differently, naming both.
    pub fn build(
        bundles: Vec<ServedBundle>,
        opts: &ViewOptions,
        progress: &dyn Progress,
    ) -> Result<RegistryView, ServeError> {
        let mut view = RegistryView {
            bundles,
            choice: opts.choice,
            images: Vec::new(),
            gzip_passes: 0,
            faulty: HashMap::new(),
            repositories: BTreeMap::new(),
            documents: HashMap::new(),
            blobs: HashMap::new(),
        };
        let gzip_digests = if opts.choice.serves(LayerSet::Gzip) {
            view.learn_gzip_digests(opts, progress)?
        } else {
            HashMap::new()
        };
        // Which bundle first gave each repository:tag (for the conflict message).
        let mut claimed: HashMap<(String, String), (usize, Digest)> = HashMap::new();
        for b in 0..view.bundles.len() {
            for image in &view.bundles[b].reader.index.images.clone() {
                let names = repositories_for(opts.prefix, &image.name)?;
                let tag = names.tag.clone();
                if let Some((first, digest)) = claimed.get(&(names.primary.clone(), tag.clone())) {
                    if *digest != image.index {
                        return Err(ServeError::TagConflict {
                            reference: format!("{}:{tag}", names.primary),
                            first: view.bundles[*first].label.clone(),
                            second: view.bundles[b].label.clone(),
                        });
                    }
                    continue;
                }
                claimed.insert(
                    (names.primary.clone(), tag.clone()),
                    (b, image.index.clone()),
                );
                let mut reachable = HashSet::new();
                let mut indexes = IndexBySet::new();
                let mut not_in_gzip = Vec::new();
                if opts.choice.serves(LayerSet::Zstd) {
                    let digest = view.add_stored_set(b, image, &mut reachable)?;
                    indexes.insert(LayerSet::Zstd, digest);
                }
                if opts.choice.serves(LayerSet::Gzip) {
                    let digest = view.add_gzip_set(
                        b,
                        image,
                        &gzip_digests,
                        &mut reachable,
                        &mut not_in_gzip,
                    )?;
                    indexes.insert(LayerSet::Gzip, digest);
                }
                for (repo, alias) in names.all() {
                    let r = view.repositories.entry(repo).or_default();
                    r.alias = alias;
                    r.digests.extend(reachable.iter().cloned());
                    r.tags.insert(tag.clone(), indexes.clone());
                }
                view.images.push(ServedImage {
                    bundle: view.bundles[b].label.clone(),
                    name: image.name.clone(),
                    repository: names.primary.clone(),
                    tag,
                    platforms: image
                        .platforms
                        .iter()
                        .map(|p| p.platform.to_string())
                        .collect(),
                    indexes,
                    not_in_gzip,
                });
            }
        }
        Ok(view)
    }

    fn member(&self, bundle: usize, digest: &Digest) -> Result<(usize, &Member), ServeError> {
        let index = &self.bundles[bundle].reader.index;
        index
            .members
            .iter()
            .enumerate()
            .find(|(_, m)| m.digest == *digest)
            .ok_or_else(|| ServeError::MissingMember {
                bundle: self.bundles[bundle].label.clone(),
                digest: digest.clone(),
            })
    }

    /// Bundle `b`'s own documents and blobs for `image`; returns its index's digest.
    fn add_stored_set(
        &mut self,
        b: usize,
        image: &archpack_format::ImageEntry,
        reachable: &mut HashSet<Digest>,
    ) -> Result<Digest, ServeError> {
        self.add_stored_document(b, &image.index, INDEX_TYPE, reachable)?;
        for p in &image.platforms {
            self.add_stored_document(b, &p.manifest, MANIFEST_TYPE, reachable)?;
            for d in std::iter::once(&p.config).chain(&p.layers) {
                self.add_stored_blob(b, d, reachable)?;
            }
        }
        Ok(image.index.clone())
    }

    /// Member `digest` of bundle `b` as a blob, as stored; returns the member.
    fn add_stored_blob(
        &mut self,
        b: usize,
        digest: &Digest,
        reachable: &mut HashSet<Digest>,
    ) -> Result<usize, ServeError> {
        let (member, _) = self.member(b, digest)?;
        self.blobs
            .entry(digest.clone())
            .or_insert(Blob::Stored { bundle: b, member });
        reachable.insert(digest.clone());
        Ok(member)
    }

    fn add_stored_document(
        &mut self,
        b: usize,
        digest: &Digest,
        media_type: &'static str,
        reachable: &mut HashSet<Digest>,
    ) -> Result<(), ServeError> {
        let (member, _) = self.member(b, digest)?;
        self.documents
            .entry(digest.clone())
            .or_insert(Document::Member {
                bundle: b,
                member,
                media_type,
            });
        reachable.insert(digest.clone());
        Ok(())
    }

    /// The gzip set for `image`: manifests as `push --layer-format gzip` writes them
    /// (the bundle's configs, gzip layers), and an index over them.
    fn add_gzip_set(
        &mut self,
        b: usize,
        image: &archpack_format::ImageEntry,
        gzip_digests: &HashMap<Digest, gzip::GzipDigest>,
        reachable: &mut HashSet<Digest>,
        not_in_gzip: &mut Vec<String>,
    ) -> Result<Digest, ServeError> {
        let mut descriptors = Vec::new();
        for p in &image.platforms {
            let Some(encoded) = p
                .layers
                .iter()
                .map(|l| gzip_digests.get(l))
                .collect::<Option<Vec<_>>>()
            else {
                // A layer failed at start: no digest to name it by.
                not_in_gzip.push(p.platform.to_string());
                continue;
            };
            let config = self.add_stored_blob(b, &p.config, reachable)?;
            let config = &self.bundles[b].reader.index.members[config];
            let config_descriptor =
                oci::descriptor(MediaType::ImageConfig, &config.digest, config.size);
            let mut layers = Vec::new();
            for (l, gz) in p.layers.iter().zip(encoded) {
                let (li, _) = self.member(b, l)?;
                layers.push(oci::descriptor(
                    MediaType::ImageLayerGzip,
                    &gz.digest,
                    gz.size,
                ));
                self.blobs.entry(gz.digest.clone()).or_insert(Blob::Gzip {
                    bundle: b,
                    member: li,
                    size: gz.size,
                });
                reachable.insert(gz.digest.clone());
            }
            let manifest = oci::manifest(config_descriptor, layers)?;
            let digest = Digest::of(&manifest);
            descriptors.push(oci::platform_manifest(
                &digest,
                manifest.len() as u64,
                &p.platform,
            ));
            self.add_built(digest.clone(), manifest, MANIFEST_TYPE);
            reachable.insert(digest);
        }
        let index = oci::index(descriptors)?;
        let digest = Digest::of(&index);
        self.add_built(digest.clone(), index, INDEX_TYPE);
        reachable.insert(digest.clone());
        Ok(digest)
    }

    fn add_built(&mut self, digest: Digest, bytes: Vec<u8>, media_type: &'static str) {
        self.documents.entry(digest).or_insert(Document::Built {
            bytes: bytes.into(),
            media_type,
        });
    }

    /// The gzip digest of every layer of every bundle: remembered, or learnt by one
    /// compression pass each (with progress).
    fn learn_gzip_digests(
        &mut self,
        opts: &ViewOptions,
        progress: &dyn Progress,
    ) -> Result<HashMap<Digest, gzip::GzipDigest>, ServeError> {
        let cache = GzipDigestCache {
            dir: opts.digest_cache,
        };
        let mut layers: Vec<(usize, &Member)> = Vec::new();
        let mut seen = HashSet::new();
        for (b, bundle) in self.bundles.iter().enumerate() {
            for image in &bundle.reader.index.images {
                for p in &image.platforms {
                    for l in &p.layers {
                        if seen.insert(l.clone()) {
                            let (_, m) = self.member(b, l)?;
                            layers.push((b, m));
                        }
                    }
                }
            }
        }
        let total = layers.iter().map(|(_, m)| m.size).sum();
        progress.start("learning the layers' gzip digests", Some(total));
        let mut digests = HashMap::new();
        let mut passes = 0;
        let mut faulty = HashMap::new();
        for (b, m) in layers {
            let known = match gzip::gzip_digest(
                &self.bundles[b].reader,
                m,
                &cache,
                opts.gzip_threads,
                &|n| progress.advance(n),
            ) {
                Ok(known) => known,
                Err(error) => {
                    // Served as faulty, not refused: the rest of the bundles is good.
                    faulty.insert(
                        m.digest.clone(),
                        super::FaultyMember {
                            bundle: self.bundles[b].label.clone(),
                            member: m.name.clone(),
                            detail: error.to_string(),
                        },
                    );
                    continue;
                }
            };
            if !known.remembered {
                passes += 1;
            }
            digests.insert(m.digest.clone(), known);
        }
        progress.finish();
        self.gzip_passes = passes;
        self.faulty = faulty;
        Ok(digests)
    }

    /// The repository names the catalog lists, sorted.
    pub fn repositories(&self) -> impl Iterator<Item = &str> {
        self.repositories
            .iter()
            .filter(|(_, r)| !r.alias)
            .map(|(name, _)| name.as_str())
    }

    /// The tags of `repo`, sorted (None: no such repository).
    pub fn tags(&self, repo: &str) -> Option<impl Iterator<Item = &str>> {
        self.repositories
            .get(repo)
            .map(|r| r.tags.keys().map(String::as_str))
    }

    pub fn has_repository(&self, repo: &str) -> bool {
        self.repositories.contains_key(repo)
    }

    /// The index `tag` of `repo` resolves to in `set` (one of `choice.sets()`).
    pub fn resolve_tag(&self, repo: &str, tag: &str, set: LayerSet) -> Option<&Digest> {
        self.repositories.get(repo)?.tags.get(tag)?.get(&set)
    }

    /// A document of `repo` by digest.
    pub fn document(&self, repo: &str, digest: &Digest) -> Option<&Document> {
        self.reachable(repo, digest)
            .then(|| self.documents.get(digest))
            .flatten()
    }

    /// A blob of `repo` by digest.
    pub fn blob(&self, repo: &str, digest: &Digest) -> Option<&Blob> {
        self.reachable(repo, digest)
            .then(|| self.blobs.get(digest))
            .flatten()
    }

    fn reachable(&self, repo: &str, digest: &Digest) -> bool {
        self.repositories
            .get(repo)
            .is_some_and(|r| r.digests.contains(digest))
    }

    /// The member behind a stored document or blob.
    pub fn member_at(&self, bundle: usize, member: usize) -> (&ServedBundle, &Member) {
        let b = &self.bundles[bundle];
        (b, &b.reader.index.members[member])
    }
}

/// The repository names an image is served under, and its tag.
struct Names {
    primary: String,
    /// Docker Hub's implicit `library/` (what a containerd mirror of docker.io asks for).
    alias: Option<String>,
    tag: String,
}

impl Names {
    /// Each name, and whether it is the alias.
    fn all(&self) -> impl Iterator<Item = (String, bool)> + '_ {
        std::iter::once((self.primary.clone(), false)).chain(self.alias.clone().map(|a| (a, true)))
    }
}

/// `svc:v1.0` → `svc` (and `library/svc`), tag `v1.0`; `reg.site:5000/team/svc:2` →
/// `team/svc` (what a mirror of that registry is asked for); under `prefix/` if given.
fn repositories_for(prefix: &str, logical: &str) -> Result<Names, ServeError> {
    let name = ImageRef::parse_tagged(logical)?;
    let tag = name.tag().to_string();
    let repository = name.repository();
    let hub_library = repository
        .strip_prefix("library/")
        .filter(|_| name.registry() == crate::reference::DOCKER_HUB);
    if !prefix.is_empty() {
        let short = hub_library.unwrap_or(repository);
        return Ok(Names {
            primary: format!("{prefix}/{short}"),
            alias: None,
            tag,
        });
    }
    Ok(match hub_library {
        Some(short) => Names {
            primary: short.to_string(),
            alias: Some(repository.to_string()),
            tag,
        },
        None => Names {
            primary: repository.to_string(),
            alias: None,
            tag,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_that_take_zstd() {
        for ua in [
            "docker/28.5.1 go/go1.24 git-commit/abc kernel/6.1 os/linux arch/amd64",
            "docker/23.0.0",
            "containerd/1.7.2",
            "containerd/v2.1.4",
            "containers/5.33.0 (github.com/containers/image)",
            "skopeo/1.18",
        ] {
            assert_eq!(
                LayerChoice::Auto.for_client(Some(ua)),
                LayerSet::Zstd,
                "{ua}"
            );
        }
        for ua in [
            "docker/20.10.24+dfsg1 go/go1.19.8 git-commit/5d6db84 kernel/6.1 os/linux arch/amd64 UpstreamClient(Docker-Client/20.10.24+dfsg1 \\(linux\\))",
            "containerd/1.4.13",
            "curl/7.88.1",
            "Go-http-client/1.1",
        ] {
            assert_eq!(LayerChoice::Auto.for_client(Some(ua)), LayerSet::Gzip, "{ua}");
        }
        assert_eq!(LayerChoice::Auto.for_client(None), LayerSet::Gzip);
        assert_eq!(LayerChoice::Zstd.for_client(None), LayerSet::Zstd);
    }

    #[test]
    fn repository_names() {
        let n = repositories_for("", "svc:v1.0").unwrap();
        assert_eq!(
            (n.primary.as_str(), n.alias.as_deref(), n.tag.as_str()),
            ("svc", Some("library/svc"), "v1.0")
        );
        let n = repositories_for("", "team/svc").unwrap();
        assert_eq!(
            (n.primary.as_str(), n.alias.as_deref(), n.tag.as_str()),
            ("team/svc", None, "latest")
        );
        let n = repositories_for("", "reg.site:5000/team/svc:2").unwrap();
        assert_eq!((n.primary.as_str(), n.alias.as_deref()), ("team/svc", None));
        let n = repositories_for("edge", "svc:v1.0").unwrap();
        assert_eq!((n.primary.as_str(), n.alias.as_deref()), ("edge/svc", None));
    }
}
