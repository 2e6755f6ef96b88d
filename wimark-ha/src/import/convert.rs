//! keepalived's keywords mapped to wimark-ha's config, section by section;
//! what has no equivalent is written as a comment naming keyword and line.

use super::from_env::{peers_from_env, roles_from_env};
use super::output::{quoted, Output};
use super::*;

/// keepalived's seconds (`1`, `0.01`) as a wimark-ha duration.
pub(super) fn seconds(text: &str) -> Option<String> {
    let value: f64 = text.parse().ok()?;
    if !(value.is_finite() && value >= 0.0) {
        return None;
    }
    let ms = (value * 1000.0).round() as u64;
    Some(if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    })
}


/// Converts a parsed keepalived config; `source` names it in the header.
pub fn convert(statements: &[Statement], source: &Path, env: Option<&VendorEnv>) -> String {
    let mut out = Output {
        text: String::new(),
        notes: Vec::new(),
    };
    out.line(format!(
        "# wimark-ha config imported from {} by `wimark-ha import-keepalived`.",
        source.display()
    ));
    out.line("# Check it with `wimark-ha check-config --config FILE` before use.");
    let mut default_version = None;
    let mut instances = Vec::new();
    // `vrrp_script NAME { ... }` and `vrrp_track_file NAME { ... }`, by
    // name, for the instances' track_script / track_file.
    let mut scripts: BTreeMap<String, &Statement> = BTreeMap::new();
    let mut track_files: BTreeMap<String, &Statement> = BTreeMap::new();
    let mut track_processes: BTreeMap<String, &Statement> = BTreeMap::new();
    let mut sync_groups: Vec<&Statement> = Vec::new();
    for statement in statements {
        match statement.keyword() {
            "global_defs" => {
                for global in statement.children() {
                    match global.keyword() {
                        "vrrp_version" => default_version = global.arg(0).map(str::to_string),
                        "script_user" | "enable_script_security" => out.not_carried(
                            global,
                            "wimark-ha runs hooks and notify as its own user (root), argv without a shell",
                        ),
                        "router_id" => out.not_carried(global, "wimark-ha has no router id; status and logs use the host name"),
                        _ => out.not_carried(global, "no wimark-ha equivalent"),
                    }
                }
            }
            "vrrp_instance" => instances.push(statement),
            "vrrp_script" => match statement.arg(0) {
                Some(name) => {
                    scripts.insert(name.to_string(), statement);
                }
                None => out.not_carried(statement, "a vrrp_script without a name"),
            },
            "vrrp_track_file" => match statement.arg(0) {
                Some(name) => {
                    track_files.insert(name.to_string(), statement);
                }
                None => out.not_carried(statement, "a vrrp_track_file without a name"),
            },
            "vrrp_track_process" => match statement.arg(0) {
                Some(name) => {
                    track_processes.insert(name.to_string(), statement);
                }
                None => out.not_carried(statement, "a vrrp_track_process without a name"),
            },
            "vrrp_sync_group" => sync_groups.push(statement),
            "virtual_server" | "virtual_server_group" => {
                out.not_carried(statement, "LVS load balancing is not part of wimark-ha")
            }
            "include" => out.not_carried(
                statement,
                "included files are not read; import each of them as well",
            ),
            _ => out.not_carried(statement, "unknown keyword"),
        }
    }
    out.flush_notes();
    let mut notify_script: Option<(String, Statement)> = None;
    let mut vip_addresses = Vec::new();
    for instance in &instances {
        let name = instance.arg(0).unwrap_or("VI_1").to_string();
        out.line("");
        out.line("[[instance]]");
        out.line(format!("name = {}", quoted(&name)));
        let mut fields: BTreeMap<&str, String> = BTreeMap::new();
        // `[[instance.track]]` tables, written after the instance's keys.
        let mut trackers: Vec<String> = Vec::new();
        let mut version = default_version.clone();
        let mut priority = "100".to_string();
        for item in instance.children() {
            let arg = item.arg(0);
            match (item.keyword(), arg) {
                ("interface", Some(interface)) => {
                    fields.insert("interface", quoted(interface));
                }
                ("virtual_router_id", Some(vrid)) => {
                    fields.insert("vrid", vrid.to_string());
                }
                ("priority", Some(value)) => priority = value.to_string(),
                ("version", Some(value)) => version = Some(value.to_string()),
                ("advert_int", Some(value)) => match seconds(value) {
                    Some(interval) => {
                        fields.insert("advert_interval", quoted(&interval));
                    }
                    None => out.not_carried(item, "not a number of seconds"),
                },
                ("state", Some(state)) => out.notes.push(format!(
                    "# line {}: `state {state}` is keepalived's initial state; wimark-ha starts as BACKUP \
                     and takes over when no master of higher or equal priority is heard (RFC 5798 §6.4.1){}",
                    item.line,
                    if state.eq_ignore_ascii_case("BACKUP") {
                        ". To stay the standby while both run, this server's priority must be lower than the other's"
                    } else {
                        ""
                    }
                )),
                ("nopreempt", None) => {
                    fields.insert("preempt", "false".to_string());
                }
                ("preempt", None) => {
                    fields.insert("preempt", "true".to_string());
                }
                ("authentication", None) => {
                    let mut kind = None;
                    for auth in item.children() {
                        match (auth.keyword(), auth.arg(0)) {
                            ("auth_type", Some(t)) => kind = Some(t.to_ascii_uppercase()),
                            ("auth_pass", Some(pass)) => {
                                fields.insert("auth_pass", quoted(pass));
                            }
                            _ => out.not_carried(auth, "unknown authentication keyword"),
                        }
                    }
                    if kind.as_deref() == Some("AH") {
                        fields.remove("auth_pass");
                        out.not_carried(item, "IPsec AH authentication is not supported (only PASS, VRRPv2)");
                    }
                }
                ("virtual_ipaddress", None) => {
                    let mut addresses = Vec::new();
                    for vip in item.children() {
                        let address = vip.keyword();
                        let with_prefix = if address.contains('/') {
                            address.to_string()
                        } else if address.contains(':') {
                            format!("{address}/128")
                        } else {
                            format!("{address}/32")
                        };
                        addresses.push(quoted(&with_prefix));
                        let mut words = vip.words[1..].iter();
                        while let Some(word) = words.next() {
                            match (word.as_str(), words.next()) {
                                ("dev", Some(dev)) if Some(dev.as_str()) == instance_interface(instance) => {}
                                _ => {
                                    out.not_carried(vip, "only the address is carried, and wimark-ha adds it on the instance's interface, not on another `dev`: check that is where it belongs (or give that link an instance of its own)");
                                    break;
                                }
                            }
                        }
                    }
                    for vip in item.children() {
                        vip_addresses.push(vip.keyword().split('/').next().unwrap_or("").to_string());
                    }
                    fields.insert("virtual_ips", format!("[{}]", addresses.join(", ")));
                }
                ("unicast_peer", None) => {
                    let peers: Vec<String> =
                        item.children().iter().map(|p| quoted(p.keyword())).collect();
                    fields.insert("unicast_peers", format!("[{}]", peers.join(", ")));
                }
                ("garp_master_delay", Some(value)) => match seconds(value) {
                    Some(delay) => {
                        fields.insert("garp_master_delay", quoted(&delay));
                    }
                    None => out.not_carried(item, "not a number of seconds"),
                },
                ("garp_master_repeat", Some(value)) => {
                    fields.insert("garp_master_repeat", value.to_string());
                }
                ("notify", Some(script)) => {
                    if item.words.len() > 2 || script.contains(char::is_whitespace) {
                        // keepalived splits `notify "/path --flag"` into argv.
                        out.not_carried(
                            item,
                            "a notify with arguments: wimark-ha runs one program, with keepalived's arguments (INSTANCE, name, state); wrap the command in a script that takes none",
                        );
                    } else {
                        match &notify_script {
                            Some((first, first_item)) if first != script => out.not_carried(
                                item,
                                &format!(
                                    "wimark-ha runs one [notify] script for every instance: `{first}` (line {}) is the one carried over; it gets the instance's name as its second argument",
                                    first_item.line
                                ),
                            ),
                            // The same script: the one [notify] covers both.
                            Some(_) => {}
                            None => notify_script = Some((script.to_string(), item.clone())),
                        }
                    }
                }
                ("notify_master" | "notify_backup" | "notify_fault" | "notify_stop", _) => out.not_carried(
                    item,
                    "per-state scripts are not supported: use one `[notify] script`, which gets the state as its third argument",
                ),
                ("track_script", None) => {
                    for reference in item.children() {
                        let name = reference.keyword();
                        match scripts.get(name) {
                            Some(script) => trackers.push(script_tracker(&mut out, script, reference)),
                            None => out.not_carried(reference, "no vrrp_script of that name in this file"),
                        }
                    }
                }
                ("track_interface", None) => {
                    for reference in item.children() {
                        let mut table = format!("[[instance.track]]\ninterface = {}\n", quoted(reference.keyword()));
                        table.push_str(&weight_of(&mut out, reference, None));
                        trackers.push(table);
                    }
                }
                ("track_file", None) => {
                    for reference in item.children() {
                        match track_files.get(reference.keyword()) {
                            Some(file) => {
                                if let Some(table) = file_tracker(&mut out, file, reference) {
                                    trackers.push(table);
                                }
                            }
                            None => out.not_carried(reference, "no vrrp_track_file of that name in this file"),
                        }
                    }
                }
                ("track_process", None) => {
                    for reference in item.children() {
                        match track_processes.get(reference.keyword()) {
                            Some(process) => {
                                if let Some(table) = process_tracker(&mut out, process, reference) {
                                    trackers.push(table);
                                }
                            }
                            None => out.not_carried(reference, "no vrrp_track_process of that name in this file"),
                        }
                    }
                }
                ("track_bfd", _) => out.not_carried(item, "BFD trackers are not supported"),
                ("unicast_src_ip", _) => out.not_carried(
                    item,
                    "wimark-ha sends from the interface's primary address",
                ),
                _ => out.not_carried(item, "no wimark-ha equivalent"),
            }
        }
        fields.insert("priority", priority);
        if let Some(version) = version {
            fields.insert("version", version);
        } else {
            fields.insert("version", "2".to_string());
        }
        // A stable, readable order: the one the README documents.
        for key in [
            "interface",
            "vrid",
            "priority",
            "version",
            "advert_interval",
            "auth_pass",
            "virtual_ips",
            "preempt",
            "unicast_peers",
            "garp_master_repeat",
            "garp_master_delay",
        ] {
            if let Some(value) = fields.get(key) {
                out.line(format!("{key} = {value}"));
            }
        }
        if !fields.contains_key("unicast_peers") {
            if let Some(env) = env {
                peers_from_env(&mut out, env);
            }
        }
        for table in trackers {
            out.line("");
            out.text.push_str(&table);
        }
        out.flush_notes();
    }
    let names: Vec<&str> = instances.iter().map(|i| i.arg(0).unwrap_or("VI_1")).collect();
    for group in sync_groups {
        sync_group(&mut out, group, &names);
    }
    if let Some(env) = env {
        roles_from_env(
            &mut out,
            env,
            instances.first().map(|i| i.arg(0).unwrap_or("VI_1")),
            notify_script.as_ref(),
            &vip_addresses,
        );
    } else if let Some((script, _)) = &notify_script {
        out.line("");
        out.line("[notify]");
        out.line(format!("script = {}", quoted(script)));
    }
    out.text
}

/// A `vrrp_sync_group NAME { group { A B } }` as a `[[sync_group]]`: its
/// members must be instances of this file; its own notify and tracking
/// settings are listed (the one `[notify]` script is told of the group).
fn sync_group(out: &mut Output, group: &Statement, instances: &[&str]) {
    let Some(name) = group.arg(0) else {
        out.not_carried(group, "a vrrp_sync_group without a name");
        return;
    };
    let mut members = Vec::new();
    for setting in group.children() {
        match setting.keyword() {
            "group" => {
                for member in setting.children() {
                    if instances.contains(&member.keyword()) {
                        members.push(member.keyword().to_string());
                    } else {
                        out.not_carried(member, "no vrrp_instance of that name in this file");
                    }
                }
            }
            _ => out.not_carried(
                setting,
                "a group's own notify and tracking are not carried: the [notify] script gets `GROUP NAME STATE`, and a member's failed tracker is FAULT for the group",
            ),
        }
    }
    if members.len() < 2 {
        out.not_carried(group, "a sync group needs two instances of this file");
        return;
    }
    out.line("");
    out.line(format!("[[sync_group]]   # vrrp_sync_group {name} (line {})", group.line));
    out.line(format!("name = {}", quoted(name)));
    let list: Vec<String> = members.iter().map(|m| quoted(m)).collect();
    out.line(format!("instances = [{}]", list.join(", ")));
    out.flush_notes();
}

/// `weight N` on a track_* reference (which overrides the definition's),
/// else the definition's, as a `weight = N` line ("" for keepalived's
/// default 0: FAULT while failing).
fn weight_of(out: &mut Output, reference: &Statement, definition: Option<&Statement>) -> String {
    let from_reference = match (reference.arg(0), reference.arg(1)) {
        (Some("weight"), Some(weight)) => Some(weight.to_string()),
        (None, _) => None,
        _ => {
            out.not_carried(reference, "only `weight N` is understood after the name (`reverse` is not supported)");
            None
        }
    };
    let from_definition = definition.and_then(|d| {
        d.children()
            .iter()
            .find(|c| c.keyword() == "weight")
            .and_then(|c| c.arg(0))
            .map(str::to_string)
    });
    match from_reference.or(from_definition) {
        Some(weight) if weight.parse::<i32>().is_ok() && weight != "0" => format!("weight = {weight}\n"),
        Some(weight) if weight.parse::<i32>().is_ok() => String::new(),
        Some(weight) => {
            out.not_carried(reference, &format!("weight `{weight}` is not a number; keepalived's default 0 (FAULT) is used"));
            String::new()
        }
        None => String::new(),
    }
}

/// A `vrrp_script` referenced by `track_script`, as an `[[instance.track]]`.
/// keepalived runs a script without a shell when it is a plain command
/// line; anything a shell would be needed for (no absolute program, `|`,
/// `<`, `$`...) runs through `/bin/sh -c`, which keeps its meaning.
fn script_tracker(out: &mut Output, script: &Statement, reference: &Statement) -> String {
    let name = script.arg(0).unwrap_or("chk");
    let mut table = format!("[[instance.track]]   # vrrp_script {name} (line {})\nname = {}\n", script.line, quoted(name));
    let mut command = None;
    for setting in script.children() {
        match (setting.keyword(), setting.arg(0)) {
            ("script", Some(text)) => command = Some(text.to_string()),
            ("interval" | "timeout", Some(value)) => match seconds(value) {
                Some(duration) if duration != "0s" => {
                    table.push_str(&format!("{} = {}\n", setting.keyword(), quoted(&duration)))
                }
                _ => out.not_carried(setting, "not a positive number of seconds"),
            },
            ("rise" | "fall", Some(value)) if value.parse::<u32>().is_ok_and(|n| n >= 1) => {
                table.push_str(&format!("{} = {value}\n", setting.keyword()))
            }
            ("init_fail", None) => table.push_str("init_fail = true\n"),
            ("weight", Some(_)) => {}
            ("user", _) => out.not_carried(setting, "wimark-ha runs tracker scripts as its own user (root)"),
            _ => out.not_carried(setting, "no wimark-ha equivalent"),
        }
    }
    let argv = match command {
        Some(text) => {
            let plain = !text.contains(|c: char| "|&;<>()$`\\\"'*?[]#~=%".contains(c));
            let words: Vec<&str> = text.split_whitespace().collect();
            if plain && words.first().is_some_and(|w| w.starts_with('/')) {
                words.iter().map(|w| quoted(w)).collect::<Vec<_>>().join(", ")
            } else {
                format!("\"/bin/sh\", \"-c\", {}", quoted(&text))
            }
        }
        None => {
            out.not_carried(script, "a vrrp_script without `script`: it is kept, and check-config will refuse it until it has one");
            "\"\"".to_string()
        }
    };
    table.push_str(&format!("script = [{argv}]\n"));
    table.push_str(&weight_of(out, reference, Some(script)));
    table
}

/// A `vrrp_track_file` referenced by `track_file`.
fn file_tracker(out: &mut Output, file: &Statement, reference: &Statement) -> Option<String> {
    let name = file.arg(0).unwrap_or("file");
    let mut path = None;
    for setting in file.children() {
        match (setting.keyword(), setting.arg(0)) {
            ("file", Some(p)) => path = Some(p.to_string()),
            ("weight", Some(_)) => {}
            _ => out.not_carried(setting, "no wimark-ha equivalent (a missing file reads as 0)"),
        }
    }
    let Some(path) = path else {
        out.not_carried(file, "a vrrp_track_file without `file`");
        return None;
    };
    let mut table = format!(
        "[[instance.track]]   # vrrp_track_file {name} (line {})\nname = {}\nfile = {}\n",
        file.line,
        quoted(name),
        quoted(&path)
    );
    table.push_str(&weight_of(out, reference, Some(file)));
    Some(table)
}

/// A `vrrp_track_process` referenced by `track_process`: its process name,
/// quorum and the delay before a loss counts (keepalived's `delay` /
/// `terminate_delay`, our `grace`).
fn process_tracker(out: &mut Output, process: &Statement, reference: &Statement) -> Option<String> {
    let name = process.arg(0).unwrap_or("process");
    let mut table = format!("[[instance.track]]   # vrrp_track_process {name} (line {})\nname = {}\n", process.line, quoted(name));
    let mut program = None;
    for setting in process.children() {
        match (setting.keyword(), setting.arg(0)) {
            ("process", Some(p)) => {
                if setting.arg(1).is_some() {
                    out.not_carried(setting, "parameters are not matched: the process is counted by its name");
                }
                program = Some(p.rsplit('/').next().unwrap_or(p).to_string());
            }
            ("quorum", Some(n)) if n.parse::<u32>().is_ok_and(|n| n >= 1) => table.push_str(&format!("quorum = {n}\n")),
            ("delay" | "terminate_delay", Some(value)) => match seconds(value) {
                Some(duration) => table.push_str(&format!("grace = {}\n", quoted(&duration))),
                None => out.not_carried(setting, "not a number of seconds"),
            },
            ("weight", Some(_)) => {}
            _ => out.not_carried(setting, "no wimark-ha equivalent (param_match, quorum_max, fork_delay, full_command: the process is counted by name)"),
        }
    }
    let Some(program) = program else {
        out.not_carried(process, "a vrrp_track_process without `process`");
        return None;
    };
    table.push_str(&format!("process = {}\n", quoted(&program)));
    table.push_str(&weight_of(out, reference, Some(process)));
    Some(table)
}

fn instance_interface(instance: &Statement) -> Option<&str> {
    instance
        .children()
        .iter()
        .find(|s| s.keyword() == "interface")
        .and_then(|s| s.arg(0))
}
