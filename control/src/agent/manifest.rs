//! Manifests on disk: a YAML or JSON file, or a directory of them, read the way
//! `kubectl apply -f` reads them (multi-document YAML, `kind: List`).
//!
//! A bad document is reported with its file and line and skipped. The last good
//! state of the object it held stays in force: when the bad document still shows
//! which object it is (kind, namespace, name) that object's previous version is
//! kept, otherwise every object the file held before and no longer holds is kept.
//! So a broken edit never deletes anything; deleting the document or the file does.

use crate::agent::kobj::{KubeKey, KubeObject, Parsed, parse_value, peek_key};
use crate::agent::translate::translate;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// File names read in a directory.
const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];
/// How deep directories are searched (ConfigMap volumes nest two levels).
const MAX_DEPTH: usize = 8;

/// A document that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocError {
    pub file: PathBuf,
    /// 1-based line: where the YAML error is, or where the document starts.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for DocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// What one file held.
#[derive(Debug, Default)]
pub struct FileContent {
    pub objects: Vec<KubeObject>,
    /// Bad documents, with the object each was about when that could be told.
    pub errors: Vec<(DocError, Option<KubeKey>)>,
    /// Documents of kinds the agent does not read (`apps/v1 Deployment`...).
    pub unsupported: Vec<String>,
}

/// Splits a YAML stream at `---` lines; each document with its first line (1-based).
pub fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if marker || line == "..." {
            docs.push((start, std::mem::take(&mut cur)));
            start = n + 1;
            if marker && line.len() > 3 {
                // `--- {inline: doc}`: the rest of the line belongs to the new document.
                cur.push_str(&line[4..]);
                cur.push('\n');
                start = n;
            }
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
    }
    docs.push((start, cur));
    docs.retain(|(_, d)| {
        d.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#') && !t.starts_with('%')
        })
    });
    docs
}

/// Parses one file's text. Objects that do not translate are bad documents too,
/// reported here where their file and line are known.
pub fn parse_file(file: &Path, text: &str) -> FileContent {
    let mut out = FileContent::default();
    for (start, doc) in split_documents(text) {
        let err = |line: usize, message: String| DocError {
            file: file.to_path_buf(),
            line,
            message,
        };
        let value: serde_json::Value = match serde_yaml::from_str(&doc) {
            Ok(v) => v,
            Err(e) => {
                let line = e
                    .location()
                    .map_or(start, |l| start + l.line().saturating_sub(1));
                out.errors.push((err(line, format!("YAML: {e}")), None));
                continue;
            }
        };
        let key = peek_key(&value);
        let parsed = match parse_value(value) {
            Ok(p) => p,
            Err(e) => {
                out.errors.push((err(start, e), key));
                continue;
            }
        };
        for p in parsed {
            match p {
                Parsed::Unsupported(what) => out.unsupported.push(what),
                Parsed::Object(o) => match translate(&o, "") {
                    Ok(_) => out.objects.push(o),
                    Err(e) => out
                        .errors
                        .push((err(start, format!("{}: {e}", o.key())), Some(o.key()))),
                },
            }
        }
    }
    out
}

/// The manifest files under `root` (itself, if it is a file), in path order.
/// Hidden entries are skipped (editor swap files, ConfigMap volumes' `..data`
/// internals; their visible symlinks are followed).
pub fn manifest_files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(root)?;
    if meta.is_file() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut out = Vec::new();
    walk(root, 0, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        // Follows symlinks; an entry that vanished meanwhile is skipped.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(&path, depth + 1, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e))
        {
            out.push(path);
        }
    }
    Ok(())
}

struct FileState {
    hash: u64,
    objects: BTreeMap<KubeKey, KubeObject>,
}

/// A change of one object of the set, as a watch would report it.
#[derive(Debug, Clone, PartialEq)]
pub enum ManifestEvent {
    /// Added, or changed.
    Apply(KubeObject),
    Delete(KubeKey),
}

/// The result of one [`ManifestSet::refresh`].
#[derive(Debug, Default)]
pub struct Refresh {
    /// Whether the set of objects changed.
    pub changed: bool,
    /// The objects that changed, each once (only those: a file is compared with
    /// its previous content object by object).
    pub events: Vec<ManifestEvent>,
    /// When the first changed or removed file was noticed.
    pub seen_at: Option<std::time::Instant>,
    /// Bad documents in files that changed since the last refresh.
    pub errors: Vec<DocError>,
    /// Unsupported kinds in files that changed.
    pub unsupported: Vec<String>,
}

/// The objects of a manifest file or directory, kept up to date by
/// [`refresh`](Self::refresh) (the agent calls it about once a second).
pub struct ManifestSet {
    root: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
}

impl ManifestSet {
    pub fn new(root: &Path) -> ManifestSet {
        ManifestSet {
            root: root.to_path_buf(),
            files: BTreeMap::new(),
        }
    }

    /// Re-reads files whose content changed. If `root` cannot be read at all, the
    /// objects stay as they were and the error is returned.
    ///
    /// A changed file is parsed and compared with what it held before, object by
    /// object; only the objects whose effective version changed (the last file
    /// defining a key wins) become events. Unchanged files cost a read and a hash.
    pub fn refresh(&mut self) -> Result<Refresh, String> {
        let paths =
            manifest_files(&self.root).map_err(|e| format!("{}: {e}", self.root.display()))?;
        let mut r = Refresh::default();
        let listed: std::collections::BTreeSet<&PathBuf> = paths.iter().collect();
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !listed.contains(p))
            .cloned()
            .collect();
        for path in gone {
            r.seen_at.get_or_insert_with(std::time::Instant::now);
            let touched: Vec<KubeKey> = self
                .files
                .get(&path)
                .map(|f| f.objects.keys().cloned().collect())
                .unwrap_or_default();
            self.replace_file(&path, None, touched, &mut r);
        }
        for path in paths {
            let text = match std::fs::read(&path) {
                Ok(t) => t,
                // Removed between listing and reading: the next refresh sees it gone.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    r.errors.push(DocError {
                        file: path.clone(),
                        line: 0,
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            let hash = {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                text.hash(&mut h);
                h.finish()
            };
            if self.files.get(&path).is_some_and(|f| f.hash == hash) {
                continue;
            }
            r.seen_at.get_or_insert_with(std::time::Instant::now);
            let text = String::from_utf8_lossy(&text);
            let content = parse_file(&path, &text);
            let empty = BTreeMap::new();
            let old = self.files.get(&path).map_or(&empty, |f| &f.objects);
            let mut objects: BTreeMap<KubeKey, KubeObject> =
                content.objects.into_iter().map(|o| (o.key(), o)).collect();
            for (e, key) in &content.errors {
                match key {
                    Some(k) => {
                        if let Some(prev) = old.get(k) {
                            objects.entry(k.clone()).or_insert_with(|| prev.clone());
                        }
                    }
                    None => {
                        for (k, prev) in old {
                            objects.entry(k.clone()).or_insert_with(|| prev.clone());
                        }
                    }
                }
                r.errors.push(e.clone());
            }
            r.unsupported.extend(content.unsupported);
            let mut touched: Vec<KubeKey> = old
                .iter()
                .filter(|(k, o)| objects.get(*k) != Some(*o))
                .map(|(k, _)| k.clone())
                .collect();
            touched.extend(objects.keys().filter(|k| !old.contains_key(*k)).cloned());
            let state = FileState { hash, objects };
            self.replace_file(&path, Some(state), touched, &mut r);
        }
        r.changed = !r.events.is_empty();
        Ok(r)
    }

    /// The version of `key` in force: from the last file (in path order) defining it.
    fn effective(&self, key: &KubeKey) -> Option<&KubeObject> {
        self.files.values().rev().find_map(|f| f.objects.get(key))
    }

    /// Puts `state` in place of `path`'s (or removes it) and reports the effective
    /// changes of the `touched` keys.
    fn replace_file(
        &mut self,
        path: &Path,
        state: Option<FileState>,
        touched: Vec<KubeKey>,
        r: &mut Refresh,
    ) {
        let before: Vec<Option<KubeObject>> =
            touched.iter().map(|k| self.effective(k).cloned()).collect();
        match state {
            Some(s) => {
                self.files.insert(path.to_path_buf(), s);
            }
            None => {
                self.files.remove(path);
            }
        }
        for (k, b) in touched.into_iter().zip(before) {
            match self.effective(&k) {
                Some(o) if b.as_ref() != Some(o) => r.events.push(ManifestEvent::Apply(o.clone())),
                None if b.is_some() => r.events.push(ManifestEvent::Delete(k)),
                _ => {}
            }
        }
    }

    /// Every object, files in path order; an object defined twice is taken from the
    /// last file.
    pub fn objects(&self) -> Vec<KubeObject> {
        let mut all: BTreeMap<&KubeKey, &KubeObject> = BTreeMap::new();
        for f in self.files.values() {
            all.extend(f.objects.iter());
        }
        all.into_values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Dir {
            let d =
                std::env::temp_dir().join(format!("vsagent-manifest-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).expect("mkdir");
            Dir(d)
        }
        fn write(&self, name: &str, text: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, text).expect("write");
            p
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn names(set: &ManifestSet) -> Vec<String> {
        set.objects().iter().map(|o| o.key().to_string()).collect()
    }

    const PODS: &str = "\
# two pods and a namespace
apiVersion: v1
kind: Pod
metadata: {name: a}
---
apiVersion: v1
kind: Pod
metadata:
  name: b
  namespace: shop
---
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
";

    #[test]
    fn documents_keep_their_lines() {
        let docs = split_documents(PODS);
        let starts: Vec<usize> = docs.iter().map(|d| d.0).collect();
        assert_eq!(starts, [1, 6, 13]);
        assert_eq!(split_documents("--- {a: 1}\n").len(), 1);
        assert!(split_documents("# nothing\n---\n").is_empty());
    }

    #[test]
    fn multi_document_files_and_lists() {
        let d = Dir::new("multi");
        d.write("pods.yaml", PODS);
        d.write(
            "list.json",
            r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1"}}]}"#,
        );
        d.write("notes.txt", "not a manifest");
        d.write(".swap.yaml", "garbage: [");
        d.write(
            "deploy.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
        );
        let mut set = ManifestSet::new(&d.0);
        let r = set.refresh().expect("refresh");
        assert!(r.changed);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.unsupported, ["apps/v1 Deployment"]);
        assert_eq!(
            names(&set),
            ["Node n1", "Namespace shop", "Pod default/a", "Pod shop/b"]
        );
        // Nothing changed on disk: nothing re-read, nothing changed.
        let r = set.refresh().expect("again");
        assert!(!r.changed && r.errors.is_empty());
    }

    #[test]
    fn bad_documents_are_reported_with_file_and_line_and_last_good_is_kept() {
        let d = Dir::new("bad");
        let f = d.write("pods.yaml", PODS);
        let mut set = ManifestSet::new(&d.0);
        set.refresh().expect("first");
        // Pod b's document gets a type error: it keeps its last good version; pod a is
        // removed from the file and goes.
        let edited = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata:
  name: b
  namespace: shop
spec:
  containers: 5
---
apiVersion: v1
kind: Pod
metadata: {name: c}
spec:
  containers:
  - name: x
    ports: [{name: q, containerPort: 1, protocol: QUIC}]
";
        std::fs::write(&f, edited).expect("edit");
        let r = set.refresh().expect("refresh");
        assert!(r.changed);
        assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
        assert_eq!(r.errors[0].line, 5);
        assert!(
            r.errors[0].message.starts_with("Pod shop/b: "),
            "{}",
            r.errors[0]
        );
        assert!(
            r.errors[0]
                .to_string()
                .starts_with(&format!("{}:5: ", f.display()))
        );
        assert_eq!(r.errors[1].line, 13);
        assert!(r.errors[1].message.contains("QUIC"));
        assert_eq!(names(&set), ["Namespace shop", "Pod shop/b"]);

        // A YAML syntax error hides which object it was: everything the file held
        // stays; the error points at the broken line.
        std::fs::write(
            &f,
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop\n",
        )
        .expect("edit");
        let r = set.refresh().expect("refresh");
        assert_eq!(r.errors.len(), 1);
        assert!(r.errors[0].line >= 3, "{}", r.errors[0]);
        assert!(r.errors[0].message.starts_with("YAML: "));
        assert_eq!(names(&set), ["Namespace shop", "Pod shop/b"]);

        // Deleting the file deletes its objects.
        std::fs::remove_file(&f).expect("rm");
        let r = set.refresh().expect("refresh");
        assert!(r.changed);
        assert!(set.objects().is_empty());
    }

    #[test]
    fn a_single_file_and_a_missing_root() {
        let d = Dir::new("single");
        let f = d.write(
            "one.yml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n",
        );
        let mut set = ManifestSet::new(&f);
        set.refresh().expect("file");
        assert_eq!(names(&set), ["Namespace x"]);
        std::fs::remove_file(&f).expect("rm");
        assert!(set.refresh().is_err());
        assert_eq!(
            names(&set),
            ["Namespace x"],
            "kept while the root is unreadable"
        );
    }

    /// A random object of a small universe (so files overlap and objects
    /// change), or a bad document now and then.
    fn random_doc(rng: &mut u64) -> String {
        let mut next = |n: u64| {
            *rng = rng
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (*rng >> 33) % n
        };
        let i = next(4);
        let v = next(3);
        match next(6) {
            0 => format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{i}, labels: {{v: x{v}}}}}\n"
            ),
            1 => format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: ns0, labels: {{app: a{v}}}}}\n\
                 spec: {{nodeName: node-a, containers: [{{name: c}}]}}\nstatus: {{podIP: 10.0.0.{i}}}\n"
            ),
            2 => format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: ns0}}\n\
                 spec: {{clusterIP: 172.16.0.{i}, ports: [{{port: {}}}]}}\n",
                80 + v
            ),
            3 => format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {{name: sl{i}, namespace: ns0, labels: {{kubernetes.io/service-name: s{v}}}}}\n\
                 addressType: IPv4\nendpoints: [{{addresses: [10.1.0.{i}]}}]\nports: [{{port: 8080}}]\n"
            ),
            4 => format!(
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np{i}, namespace: ns0}}\n\
                 spec: {{podSelector: {{matchLabels: {{app: a{v}}}}}}}\n"
            ),
            // A bad edit of a known object (its last good version stays), or
            // broken YAML (the file's previous objects stay).
            _ if v == 0 => "apiVersion: v1\nkind: Namespace\nmetadata: {name: ns0\n".to_string(),
            _ => format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: ns0}}\nspec: {{type: Weird}}\n"
            ),
        }
    }

    #[test]
    fn per_object_events_give_the_same_state_as_rereading_everything() {
        use crate::agent::cluster::{Cluster, NodeSettings};
        let d = Dir::new("events");
        std::fs::create_dir_all(d.0.join("sub")).expect("mkdir");
        let files = ["a.yaml", "b.yaml", "sub/c.yaml"];
        let settings = NodeSettings {
            node_name: "node-a".into(),
            ..NodeSettings::default()
        };
        let mut set = ManifestSet::new(&d.0);
        let mut incremental = Cluster::new(settings.clone());
        let mut mirror = vswitch_proto::DesiredState::new();
        let mut rng = 7u64;
        let mut events = 0;
        for round in 0..300 {
            let f = files[round % 3];
            let roll = random_doc(&mut rng).len() % 7;
            if roll == 0 {
                let _ = std::fs::remove_file(d.0.join(f));
            } else {
                let docs: Vec<String> = (0..roll).map(|_| random_doc(&mut rng)).collect();
                d.write(f, &docs.join("---\n"));
            }
            let r = set.refresh().expect("refresh");
            events += r.events.len();
            for ev in &r.events {
                match ev {
                    ManifestEvent::Apply(o) => {
                        incremental
                            .apply(o)
                            .expect("documents that do not translate never become events");
                    }
                    ManifestEvent::Delete(k) => incremental.delete(k),
                }
            }
            for (k, o) in incremental.take_changes() {
                match o {
                    Some(o) => {
                        mirror.upsert(o);
                    }
                    None => {
                        mirror.remove(&k);
                    }
                }
            }
            let mut full = Cluster::new(settings.clone());
            assert!(full.replace_all(&set.objects()).is_empty());
            let want = full.build();
            assert_eq!(incremental.build(), want, "round {round}");
            assert_eq!(mirror, want, "round {round}");
            // Unchanged content: no events.
            assert!(set.refresh().expect("again").events.is_empty());
        }
        assert!(events > 100, "{events}");

        // Reordering a file's documents changes nothing.
        let a = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n";
        let b = "apiVersion: v1\nkind: Namespace\nmetadata: {name: y}\n";
        d.write("a.yaml", &format!("{a}---\n{b}"));
        set.refresh().expect("refresh");
        d.write("a.yaml", &format!("{b}---\n{a}"));
        let r = set.refresh().expect("refresh");
        assert!(r.events.is_empty() && !r.changed, "{:?}", r.events);
    }
}
