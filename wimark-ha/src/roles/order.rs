//! The order in which a stack's containers start and stop: compose's
//! `depends_on`, from the label compose v2 records on each container or, for
//! compose 1.x (Debian's 1.29 records none), from the compose files that the
//! containers' labels name.
//!
//! Owns: turning container labels and compose files into a dependency graph
//! and running per-container work along it. Must not: call Docker itself (the
//! switcher hands it what it listed and what to do per container).

use std::{
    collections::{BTreeSet, HashMap},
    future::Future,
    path::{Path, PathBuf},
};

use futures_util::future::{join_all, FutureExt as _};

const SERVICE_LABEL: &str = "com.docker.compose.service";
/// Compose v2: `db:service_started:false,cache:service_healthy:true`.
const DEPENDS_ON_LABEL: &str = "com.docker.compose.depends_on";
/// Compose 1.27+: comma-separated, relative to the working dir label.
const CONFIG_FILES_LABEL: &str = "com.docker.compose.project.config_files";
const WORKING_DIR_LABEL: &str = "com.docker.compose.project.working_dir";

/// One container of a stack, as listed.
#[derive(Debug, Clone, Default)]
pub struct Member {
    pub id: String,
    pub name: String,
    pub labels: HashMap<String, String>,
}

/// The dependency graph of a stack.
#[derive(Debug, Default)]
pub struct Order {
    /// For each member, the members it waits for before it starts.
    pub depends_on: Vec<Vec<usize>>,
    /// Members with every dependency before its dependents.
    pub topological: Vec<usize>,
    /// Why the order is partial; reported in the switch record, never hidden.
    pub problems: Vec<String>,
}

impl Order {
    /// The order of `members`; `read` reads a compose file.
    pub fn of(members: &[Member], read: impl Fn(&Path) -> std::io::Result<String>) -> Order {
        let mut problems = Vec::new();
        let mut by_service: HashMap<&str, Vec<usize>> = HashMap::new();
        for (index, member) in members.iter().enumerate() {
            if let Some(service) = member.labels.get(SERVICE_LABEL) {
                by_service.entry(service).or_default().push(index);
            }
        }
        let mut files = ComposeFiles::default();
        let mut depends_on = vec![Vec::new(); members.len()];
        for (index, member) in members.iter().enumerate() {
            let Some(service) = member.labels.get(SERVICE_LABEL) else {
                continue;
            };
            let wanted = match member.labels.get(DEPENDS_ON_LABEL) {
                Some(label) => label
                    .split(',')
                    .filter_map(|entry| entry.split(':').next())
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
                None => files.depends_on(member, service, &read, &mut problems),
            };
            for dependency in wanted {
                match by_service.get(dependency.as_str()) {
                    Some(indices) => depends_on[index].extend(indices),
                    None => problems.push(format!(
                        "{} depends on {dependency}, which is not in this stack: not waited for",
                        member.name
                    )),
                }
            }
        }
        let topological = match topological(&depends_on) {
            Ok(order) => order,
            Err(cycle) => {
                let names: Vec<&str> = cycle.iter().map(|&i| members[i].name.as_str()).collect();
                problems.push(format!(
                    "depends_on has a cycle among {}: the stack starts without order",
                    names.join(", ")
                ));
                depends_on.iter_mut().for_each(Vec::clear);
                (0..members.len()).collect()
            }
        };
        problems.sort();
        problems.dedup();
        Order {
            depends_on,
            topological,
            problems,
        }
    }

    /// For each member, the members that depend on it: what must stop first.
    pub fn dependents(&self) -> Vec<Vec<usize>> {
        let mut dependents = vec![Vec::new(); self.depends_on.len()];
        for (index, dependencies) in self.depends_on.iter().enumerate() {
            for &dependency in dependencies {
                dependents[dependency].push(index);
            }
        }
        dependents
    }

    /// Starts `work` for each member as soon as the members it depends on
    /// have finished theirs, all others in parallel; the results by member.
    pub async fn start<'a, T, F>(&self, work: impl Fn(usize) -> F) -> Vec<T>
    where
        T: Clone + Send + Sync + 'a,
        F: Future<Output = T> + Send + 'a,
    {
        run_along(&self.depends_on, self.topological.iter().copied(), work).await
    }

    /// The reverse: each member's `work` runs once its dependents' is done.
    pub async fn stop<'a, T, F>(&self, work: impl Fn(usize) -> F) -> Vec<T>
    where
        T: Clone + Send + Sync + 'a,
        F: Future<Output = T> + Send + 'a,
    {
        run_along(
            &self.dependents(),
            self.topological.iter().rev().copied(),
            work,
        )
        .await
    }
}

async fn run_along<'a, T, F>(
    waits_for: &[Vec<usize>],
    order: impl Iterator<Item = usize>,
    work: impl Fn(usize) -> F,
) -> Vec<T>
where
    T: Clone + Send + Sync + 'a,
    F: Future<Output = T> + Send + 'a,
{
    let mut tasks = vec![None; waits_for.len()];
    for index in order {
        let before: Vec<_> = waits_for[index]
            .iter()
            .filter_map(|&w| tasks[w].clone())
            .collect();
        let job = work(index);
        let task = async move {
            join_all(before).await;
            job.await
        }
        .boxed()
        .shared();
        tasks[index] = Some(task);
    }
    join_all(tasks.into_iter().flatten()).await
}

/// Kahn's algorithm; `Err` holds the members left in (or behind) a cycle.
fn topological(depends_on: &[Vec<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    let mut waiting: Vec<usize> = depends_on.iter().map(Vec::len).collect();
    let mut dependents = vec![Vec::new(); depends_on.len()];
    for (index, dependencies) in depends_on.iter().enumerate() {
        for &dependency in dependencies {
            dependents[dependency].push(index);
        }
    }
    let mut ready: Vec<usize> = (0..depends_on.len()).filter(|&i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(depends_on.len());
    while let Some(index) = ready.pop() {
        order.push(index);
        for &dependent in &dependents[index] {
            waiting[dependent] -= 1;
            if waiting[dependent] == 0 {
                ready.push(dependent);
            }
        }
    }
    if order.len() == depends_on.len() {
        Ok(order)
    } else {
        Err((0..depends_on.len()).filter(|&i| waiting[i] > 0).collect())
    }
}

/// Compose files read once per switch, parsed into service → depends_on.
#[derive(Default)]
struct ComposeFiles {
    parsed: HashMap<PathBuf, Option<HashMap<String, BTreeSet<String>>>>,
}

impl ComposeFiles {
    fn depends_on(
        &mut self,
        member: &Member,
        service: &str,
        read: &impl Fn(&Path) -> std::io::Result<String>,
        problems: &mut Vec<String>,
    ) -> Vec<String> {
        let Some(files) = member.labels.get(CONFIG_FILES_LABEL) else {
            return Vec::new();
        };
        let working_dir = member
            .labels
            .get(WORKING_DIR_LABEL)
            .map(PathBuf::from)
            .unwrap_or_default();
        let mut wanted = BTreeSet::new();
        for file in files.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let path = working_dir.join(file);
            let services = self.parsed.entry(path.clone()).or_insert_with(|| {
                match read(&path).map_err(|e| e.to_string()).and_then(|text| parse(&text)) {
                    Ok(services) => Some(services),
                    Err(e) => {
                        problems.push(format!(
                            "compose file {} (named by the containers' labels): {e}; depends_on order unknown",
                            path.display()
                        ));
                        None
                    }
                }
            });
            if let Some(dependencies) = services.as_ref().and_then(|s| s.get(service)) {
                wanted.extend(dependencies.iter().cloned());
            }
        }
        wanted.into_iter().collect()
    }
}

/// service → depends_on of a compose file; both the list and the map form.
fn parse(text: &str) -> Result<HashMap<String, BTreeSet<String>>, String> {
    use yaml_rust2::{Yaml, YamlLoader};
    let documents = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    let mut result = HashMap::new();
    let Some(services) = documents.first().and_then(|d| d["services"].as_hash()) else {
        return Ok(result);
    };
    for (name, service) in services {
        let Some(name) = name.as_str() else { continue };
        let dependencies: BTreeSet<String> = match &service["depends_on"] {
            Yaml::Array(list) => list
                .iter()
                .filter_map(|d| d.as_str().map(String::from))
                .collect(),
            Yaml::Hash(map) => map
                .keys()
                .filter_map(|d| d.as_str().map(String::from))
                .collect(),
            _ => BTreeSet::new(),
        };
        result.insert(name.to_string(), dependencies);
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, labels: &[(&str, &str)]) -> Member {
        Member {
            id: name.to_string(),
            name: name.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn compose_v1(service: &str) -> Member {
        member(
            &format!("p_{service}_1"),
            &[
                (SERVICE_LABEL, service),
                (CONFIG_FILES_LABEL, "docker-compose.yml,override.yml"),
                (WORKING_DIR_LABEL, "/srv/wimark"),
            ],
        )
    }

    const COMPOSE: &str = "version: '2.4'\nservices:\n  mongo: {image: m}\n  broker:\n    image: b\n    depends_on: [mongo]\n  api:\n    image: a\n    depends_on:\n      mongo: {condition: service_healthy}\n";
    const OVERRIDE: &str = "services:\n  api:\n    depends_on: [broker]\n";

    fn files(path: &Path) -> std::io::Result<String> {
        match path.to_str() {
            Some("/srv/wimark/docker-compose.yml") => Ok(COMPOSE.to_string()),
            Some("/srv/wimark/override.yml") => Ok(OVERRIDE.to_string()),
            _ => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        }
    }

    #[test]
    fn compose_v1_files_give_the_order_merged_over_files() {
        let members = [compose_v1("api"), compose_v1("broker"), compose_v1("mongo")];
        let order = Order::of(&members, files);
        assert!(order.problems.is_empty(), "{:?}", order.problems);
        let mut api = order.depends_on[0].clone();
        api.sort();
        assert_eq!(api, vec![1, 2]);
        assert_eq!(order.depends_on[1], vec![2]);
        assert!(order.depends_on[2].is_empty());
        assert_eq!(order.topological, vec![2, 1, 0]);
        assert_eq!(order.dependents()[2].len(), 2);
    }

    #[test]
    fn compose_v2_label_wins_over_files() {
        let members = [
            member("db", &[(SERVICE_LABEL, "db"), (DEPENDS_ON_LABEL, "")]),
            member(
                "web",
                &[
                    (SERVICE_LABEL, "web"),
                    (
                        DEPENDS_ON_LABEL,
                        "db:service_healthy:false,ghost:service_started:true",
                    ),
                ],
            ),
        ];
        let order = Order::of(&members, |_| panic!("no file is read"));
        assert_eq!(order.depends_on, vec![vec![], vec![0]]);
        assert_eq!(order.problems.len(), 1, "{:?}", order.problems);
        assert!(order.problems[0].contains("ghost"));
    }

    #[test]
    fn an_unreadable_compose_file_is_reported_once_and_order_dropped() {
        let mut a = compose_v1("api");
        a.labels.insert(WORKING_DIR_LABEL.into(), "/gone".into());
        let mut b = compose_v1("mongo");
        b.labels.insert(WORKING_DIR_LABEL.into(), "/gone".into());
        let order = Order::of(&[a, b], files);
        assert!(order.depends_on.iter().all(Vec::is_empty));
        assert_eq!(
            order.problems.len(),
            2,
            "one per file: {:?}",
            order.problems
        );
        assert!(order.problems[0].contains("/gone/docker-compose.yml"));
    }

    /// Compose files share blocks through anchors; a file that is not
    /// YAML is an error that says where.
    #[test]
    fn anchors_are_followed_and_bad_yaml_says_where() {
        let text = "x-deps: &deps [mongo, broker]\nservices:\n  mongo: {image: m}\n  api:\n    image: a\n    depends_on: *deps\n  web:\n    depends_on:\n      api: {condition: service_started}\n";
        let parsed = parse(text).expect("valid");
        assert_eq!(
            parsed["api"],
            BTreeSet::from(["mongo".to_string(), "broker".to_string()])
        );
        assert_eq!(parsed["web"], BTreeSet::from(["api".to_string()]));
        assert!(parsed["mongo"].is_empty());
        let error = parse("services:\n  api: [unclosed\n").expect_err("not YAML");
        assert!(error.contains("line"), "{error}");
    }

    #[test]
    fn a_cycle_is_reported_and_the_stack_starts_unordered() {
        let members = [
            member("a", &[(SERVICE_LABEL, "a"), (DEPENDS_ON_LABEL, "b")]),
            member("b", &[(SERVICE_LABEL, "b"), (DEPENDS_ON_LABEL, "a")]),
            member("c", &[(SERVICE_LABEL, "c")]),
        ];
        let order = Order::of(&members, files);
        assert!(
            order.problems[0].contains("cycle among a, b"),
            "{:?}",
            order.problems
        );
        assert!(order.depends_on.iter().all(Vec::is_empty));
        assert_eq!(order.topological.len(), 3);
    }

    #[test]
    fn work_runs_along_the_graph_and_in_reverse() {
        let members = [compose_v1("api"), compose_v1("broker"), compose_v1("mongo")];
        let order = Order::of(&members, files);
        let log = std::sync::Mutex::new(Vec::new());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let run = |order_fn: bool| {
            log.lock().expect("log").clear();
            let work = |i: usize| {
                let log = &log;
                async move {
                    log.lock().expect("log").push(i);
                    i
                }
            };
            let results = if order_fn {
                runtime.block_on(order.start(work))
            } else {
                runtime.block_on(order.stop(work))
            };
            assert_eq!(results.len(), 3);
            log.lock().expect("log").clone()
        };
        assert_eq!(run(true), vec![2, 1, 0], "mongo, then broker, then api");
        assert_eq!(run(false), vec![0, 1, 2], "api stops first, mongo last");
    }
}
