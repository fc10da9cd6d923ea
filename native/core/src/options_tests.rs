//! Bad configuration, generated from the option tables: every example
//! file's pools and mod_global_distrib section are the valid baselines;
//! each option of the pool section's table (`PoolSettings::SECTION`), the
//! pool kind's tables (`registry.rs`, the readers' `OPTIONS`) and seed
//! 004's is given wrong types, each bound crossed, each choice missed, and
//! an unknown key put beside the options of every section, an unknown pool
//! type beside the types and a pool that is not a table; each must be refused by `check_toml` with an error that starts
//! with the TOML path of what was changed.

use std::path::PathBuf;

use toml::{Table, Value};

use super::{Form, Opt};
use crate::config::{PoolSettings, PoolType};
use crate::error::Error;
use crate::gd::config as gd;
use crate::toml_check::check_toml;

#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

/// Where a value sits in a document, as the error names it.
fn path_of(loc: &[Step]) -> String {
    let mut out = String::new();
    for step in loc {
        match step {
            Step::Key(k) if out.is_empty() => out.push_str(k),
            Step::Key(k) => out.push_str(&format!(".{k}")),
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn get<'v>(doc: &'v Value, loc: &[Step]) -> Option<&'v Value> {
    loc.iter().try_fold(doc, |v, step| match step {
        Step::Key(k) => v.get(k.as_str()),
        Step::Index(i) => v.get(*i),
    })
}

/// `doc` with `value` put at `loc` (its parent sections made if missing).
fn with(doc: &Value, loc: &[Step], value: Value) -> Value {
    let mut doc = doc.clone();
    let mut at = &mut doc;
    for step in &loc[..loc.len() - 1] {
        at = match step {
            Step::Key(k) => at
                .as_table_mut()
                .expect("a table on the way")
                .entry(k.clone())
                .or_insert_with(|| Value::Table(Table::new())),
            Step::Index(i) => &mut at.as_array_mut().expect("a list on the way")[*i],
        };
    }
    match loc.last() {
        Some(Step::Key(k)) => {
            at.as_table_mut().expect("a table").insert(k.clone(), value);
        }
        Some(Step::Index(i)) => at.as_array_mut().expect("a list")[*i] = value,
        None => {}
    }
    doc
}

/// `doc` without the value at `loc`, if it has one.
fn without(doc: &Value, loc: &[Step]) -> Value {
    let mut doc = doc.clone();
    let Some((Step::Key(last), parent)) = loc.split_last() else {
        return doc;
    };
    let mut at = Some(&mut doc);
    for step in parent {
        at = match (at, step) {
            (Some(v), Step::Key(k)) => v.get_mut(k.as_str()),
            (Some(v), Step::Index(i)) => v.get_mut(*i),
            (None, _) => None,
        };
    }
    if let Some(Value::Table(t)) = at {
        t.remove(last);
    }
    doc
}

struct Case {
    what: String,
    doc: Value,
    path: String,
}

/// The values an option of `form` must refuse, each with what it tries.
/// Wrong types include those an Erlang caller may use for text (a boolean's
/// atom, a charlist) but a TOML file may not.
fn bad_values(form: &Form) -> Vec<(&'static str, Value)> {
    let charlist = Value::Array(vec![Value::Integer(104), Value::Integer(105)]);
    let wrong_types = match form {
        Form::Int { .. } | Form::QueueLen => vec![Value::String("7".into()), Value::Boolean(true)],
        Form::Bool => vec![Value::String("yes".into()), Value::Integer(1)],
        Form::Text | Form::Secret | Form::OneOf(_) => {
            vec![Value::Integer(7), Value::Boolean(true), charlist]
        }
        Form::Section(_) => vec![Value::Integer(7), Value::Array(vec![])],
        Form::Sections(_) => vec![Value::Integer(7), Value::Table(Table::new())],
        Form::Shaped(_) => vec![Value::Float(1.5)],
        Form::Ignored => return vec![],
    };
    let mut out: Vec<_> = wrong_types.into_iter().map(|v| ("wrong type", v)).collect();
    match form {
        Form::Int { min, max } => {
            if *min > i64::MIN {
                out.push(("below the minimum", Value::Integer(min - 1)));
            }
            if *max < i64::MAX {
                out.push(("above the maximum", Value::Integer(max + 1)));
            }
        }
        Form::QueueLen => out.push(("below the minimum", Value::Integer(-1))),
        Form::OneOf(_) => out.push(("not a choice", Value::String("no_such_choice".into()))),
        _ => {}
    }
    out
}

/// The cases for a section at `loc` of `doc` whose options are `table`.
fn section_cases(doc: &Value, loc: &[Step], table: &[Opt], out: &mut Vec<Case>) {
    let here = |name: &str| {
        let mut l = loc.to_vec();
        l.push(Step::Key(name.to_string()));
        l
    };
    let unknown = here("no_such_option");
    out.push(Case {
        what: "unknown key".into(),
        doc: with(doc, &unknown, Value::Integer(1)),
        path: path_of(&unknown),
    });
    for opt in table {
        let at = here(opt.name);
        // The option's other name leaves, so the case is about this one.
        let others = table
            .iter()
            .filter(|o| o.alias == Some(opt.name))
            .map(|o| o.name)
            .chain(opt.alias);
        let base = others.fold(doc.clone(), |d, other| without(&d, &here(other)));
        for (what, value) in bad_values(&opt.form) {
            out.push(Case {
                what: format!("{what} ({value})"),
                doc: with(&base, &at, value),
                path: path_of(&at),
            });
        }
        // Inside a section only where the baseline has it: adding one can
        // change what the whole section means (a tls section turns TLS on).
        match (opt.form, get(doc, &at)) {
            (Form::Section(sub), Some(Value::Table(_))) => section_cases(doc, &at, sub, out),
            (Form::Sections(sub), Some(Value::Array(items))) if !items.is_empty() => {
                let mut first = at.clone();
                first.push(Step::Index(0));
                section_cases(doc, &first, sub, out)
            }
            _ => {}
        }
    }
}

fn examples() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("an example");
            let doc: Table = text.parse().expect("example TOML");
            (p.display().to_string(), Value::Table(doc))
        })
        .collect()
}

fn key(s: &str) -> Step {
    Step::Key(s.to_string())
}

/// Every baseline's cases, and the option paths (`redis.connection.port`)
/// they tried.
fn all_cases() -> (Vec<Case>, Vec<String>) {
    let mut cases = vec![];
    let mut baselines = 0;
    for (file, doc) in examples() {
        assert!(
            check_toml(&toml::to_string(&doc).expect("TOML")).is_ok(),
            "{file} is not a valid baseline"
        );
        let pools = doc.get("outgoing_pools").and_then(Value::as_table);
        if pools.is_some() {
            let unknown = [key("outgoing_pools"), key("no_such_type")];
            let mut tags = Table::new();
            tags.insert("default".into(), Value::Table(Table::new()));
            cases.push(Case {
                what: "unknown pool type".into(),
                doc: with(&doc, &unknown, Value::Table(tags)),
                path: path_of(&unknown),
            });
        }
        for (type_name, tags) in pools.into_iter().flatten() {
            let kind = PoolType::parse(type_name).expect("a pool type");
            for tag in tags.as_table().expect("tags").keys() {
                let pool = vec![key("outgoing_pools"), key(type_name), key(tag)];
                cases.push(Case {
                    what: "a pool that is not a table".into(),
                    doc: with(&doc, &pool, Value::Integer(7)),
                    path: path_of(&pool),
                });
                section_cases(&doc, &pool, &PoolSettings::SECTION, &mut cases);
                let mut conn = pool.clone();
                conn.push(key("connection"));
                section_cases(&doc, &conn, kind.kind().options, &mut cases);
                baselines += 1;
            }
        }
        if get(&doc, &[key("modules"), key("mod_global_distrib")]).is_some() {
            let root = [key("modules"), key("mod_global_distrib")];
            section_cases(&doc, &root, &gd::OPTIONS, &mut cases);
            baselines += 1;
        }
    }
    assert!(baselines > 10, "only {baselines} baselines found");
    // `outgoing_pools.redis.default.connection.tls.verify_peer` tried as
    // `redis.connection.tls.verify_peer`: which options some case reached.
    let tried = cases
        .iter()
        .filter(|c| c.what != "unknown key")
        .map(|c| {
            let p = c.path.strip_prefix("outgoing_pools.").unwrap_or(&c.path);
            let mut parts: Vec<&str> = p.split('.').collect();
            if parts.len() > 2 && !c.path.starts_with("modules.") {
                parts.remove(1); // the tag
            }
            parts.join(".")
        })
        .collect();
    (cases, tried)
}

#[test]
fn every_bad_option_is_refused_with_its_path() {
    let (cases, tried) = all_cases();
    let mut failures = vec![];
    for case in &cases {
        let text = toml::to_string(&case.doc).expect("TOML");
        match check_toml(&text) {
            Err(Error::Config(msg)) if msg.starts_with(&format!("{}:", case.path)) => {}
            other => failures.push(format!("{} {}: {other:?}", case.path, case.what)),
        }
    }
    println!(
        "bad configuration: {} generated cases, {} refused with their path",
        cases.len(),
        cases.len() - failures.len()
    );
    super::record_result(
        "bad configuration: generated from the option tables",
        &[
            ("cases", cases.len().to_string()),
            (
                "refused with their path",
                (cases.len() - failures.len()).to_string(),
            ),
        ],
    );
    assert!(
        failures.is_empty(),
        "{} of {} not refused with their path:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Every declared option of every supported kind was tried somewhere.
    for t in PoolType::ALL {
        let row = t.kind();
        if row.check.is_none() {
            continue;
        }
        for opt in row.options {
            let name = format!("{}.connection.{}", t.name(), opt.name);
            assert!(tried.contains(&name), "{name}: no case tried it");
        }
        for opt in PoolSettings::SECTION {
            let name = format!("{}.{}", t.name(), opt.name);
            assert!(tried.contains(&name), "{name}: no case tried it");
        }
    }
}

#[test]
fn every_table_names_each_option_once() {
    fn check(table: &[Opt], at: &str) {
        let mut names: Vec<_> = table.iter().map(|o| o.name).collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len(), "{at}: an option declared twice");
        for o in table {
            if let Form::Section(sub) | Form::Sections(sub) = o.form {
                check(sub, &format!("{at}.{}", o.name));
            }
        }
    }
    for t in PoolType::ALL {
        check(t.kind().options, t.name());
    }
    check(&PoolSettings::SECTION, "pool");
    check(&gd::OPTIONS, gd::ROOT);
}
