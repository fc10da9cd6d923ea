//! Every configuration section's options as data: each option's name and
//! the form its value takes (type and bounds). A reader refuses keys outside
//! its table ([`Node::only`]) and reads each value through it
//! ([`Node::opt`]), and the generated bad-config tests (`options_tests.rs`)
//! give every option of every table a wrong type, an out-of-range value and
//! an unknown sibling, so an option is covered as soon as it is declared.

use std::ops::Deref;

use crate::config::{Node, INFINITE_QUEUE_BOUND};
use crate::error::{Error, Result};
use crate::term::Term;

#[derive(Debug, Clone, Copy)]
pub enum Form {
    /// A string.
    Text,
    /// A password: a string never shown.
    Secret,
    Int {
        min: i64,
        max: i64,
    },
    Bool,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// A non-negative integer or `"infinity"` (a bound far away).
    QueueLen,
    /// A table with options of its own.
    Section(&'static [Opt]),
    /// A list of tables, each with these options.
    Sections(&'static [Opt]),
    /// A value of several shapes that its reader checks itself (legacy
    /// tuples, a boolean or a table); this says which.
    Shaped(&'static str),
    /// Accepted and not read (MongooseIM's own processing adds it).
    Ignored,
}

#[derive(Debug, Clone, Copy)]
pub struct Opt {
    pub name: &'static str,
    pub form: Form,
    /// Another name of the same setting (seed 002's and MongooseIM 6.x's,
    /// or a legacy form); a section gives one of the two.
    pub alias: Option<&'static str>,
}

impl Opt {
    pub const fn text(name: &'static str) -> Opt {
        Opt {
            name,
            form: Form::Text,
            alias: None,
        }
    }

    pub const fn secret(name: &'static str) -> Opt {
        Opt {
            name,
            form: Form::Secret,
            alias: None,
        }
    }

    pub const fn int(name: &'static str, min: i64, max: i64) -> Opt {
        Opt {
            name,
            form: Form::Int { min, max },
            alias: None,
        }
    }

    pub const fn bool(name: &'static str) -> Opt {
        Opt {
            name,
            form: Form::Bool,
            alias: None,
        }
    }

    pub const fn one_of(name: &'static str, values: &'static [&'static str]) -> Opt {
        Opt {
            name,
            form: Form::OneOf(values),
            alias: None,
        }
    }

    pub const fn queue_len(name: &'static str) -> Opt {
        Opt {
            name,
            form: Form::QueueLen,
            alias: None,
        }
    }

    pub const fn section(name: &'static str, options: &'static [Opt]) -> Opt {
        Opt {
            name,
            form: Form::Section(options),
            alias: None,
        }
    }

    pub const fn sections(name: &'static str, options: &'static [Opt]) -> Opt {
        Opt {
            name,
            form: Form::Sections(options),
            alias: None,
        }
    }

    pub const fn shaped(name: &'static str, expected: &'static str) -> Opt {
        Opt {
            name,
            form: Form::Shaped(expected),
            alias: None,
        }
    }
}

impl Opt {
    /// This option, known to be another name of `other`.
    pub const fn alias_of(self, other: &'static str) -> Opt {
        Opt {
            alias: Some(other),
            ..self
        }
    }

    pub const fn ignored(name: &'static str) -> Opt {
        Opt {
            name,
            form: Form::Ignored,
            alias: None,
        }
    }
}

/// The option named `name` in `table`.
pub fn find(table: &'static [Opt], name: &str) -> Option<&'static Opt> {
    table.iter().find(|o| o.name == name)
}

/// An option's value at its path, read in the form its table gives.
pub struct Field<'a> {
    node: Node<'a>,
    opt: &'static Opt,
}

impl<'a> Deref for Field<'a> {
    type Target = Node<'a>;

    fn deref(&self) -> &Node<'a> {
        &self.node
    }
}

impl<'a> Field<'a> {
    /// The value at `node` (a tuple's element, say) read as `opt`.
    pub fn of(node: Node<'a>, opt: &'static Opt) -> Field<'a> {
        Field { node, opt }
    }

    /// A reader asking for a form its table does not give: a bug here.
    fn misdeclared(&self, asked: &str) -> Error {
        Error::Internal(format!(
            "{}: read as {asked} but declared {:?}",
            self.node.path(),
            self.opt.form
        ))
    }

    pub fn int(&self) -> Result<Option<i64>> {
        match self.opt.form {
            Form::Int { min, max } => self.node.int(min, max),
            _ => Err(self.misdeclared("an integer")),
        }
    }

    pub fn int_or(&self, default: i64) -> Result<i64> {
        Ok(self.int()?.unwrap_or(default))
    }

    pub fn one_of(&self) -> Result<Option<String>> {
        match self.opt.form {
            Form::OneOf(values) => self.node.one_of(values),
            _ => Err(self.misdeclared("one of a list")),
        }
    }

    /// `QueueLen`: 0 keeps one waiting request (MongooseIM's worker drops
    /// a request only while others wait behind it).
    pub fn queue_len(&self) -> Result<Option<usize>> {
        if !matches!(self.opt.form, Form::QueueLen) {
            return Err(self.misdeclared("a queue length"));
        }
        match self.node.term() {
            None => Ok(None),
            Some(t) if self.node.text_of(t).as_deref() == Some("infinity") => {
                Ok(Some(INFINITE_QUEUE_BOUND))
            }
            Some(Term::Int(n)) if *n >= 0 => Ok(Some((*n as usize).clamp(1, INFINITE_QUEUE_BOUND))),
            Some(_) => Err(self.node.invalid("a non-negative integer or \"infinity\"")),
        }
    }
}

impl<'a> Node<'a> {
    /// Refuses keys outside `table`, so a typo is not silently ignored.
    pub fn only(&self, table: &[Opt]) -> Result<()> {
        let names: Vec<&str> = table.iter().map(|o| o.name).collect();
        self.only_keys(&names)
    }

    /// The value of `opt` in this section.
    pub fn opt(&self, opt: &'static Opt) -> Field<'a> {
        Field {
            node: self.at(opt.name),
            opt,
        }
    }

    /// Whichever of `opt` and `other`, two names of one setting, is set
    /// (`opt` when neither is); both set is refused.
    pub fn either(&self, opt: &'static Opt, other: &'static Opt) -> Result<Field<'a>> {
        let (first, second) = (self.opt(opt), self.opt(other));
        match (first.is_set(), second.is_set()) {
            (true, true) => Err(Error::Config(format!(
                "{}: set {} or {}, not both",
                self.path(),
                opt.name,
                other.name
            ))),
            (false, true) => Ok(second),
            _ => Ok(first),
        }
    }
}

/// A row of `make reliability`'s results table (test_results.erl's form),
/// added to the file MN_RELIABILITY_RESULTS names when it is set.
#[cfg(test)]
pub(crate) fn record_result(part: &str, cells: &[(&str, String)]) {
    use std::io::Write;
    let Ok(file) = std::env::var("MN_RELIABILITY_RESULTS") else {
        return;
    };
    let cells: Vec<String> = cells.iter().map(|(h, v)| format!("{h}: {v}")).collect();
    let line = format!("| {part} | {} |\n", cells.join(" | "));
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .expect("the results file");
    out.write_all(line.as_bytes()).expect("a results row");
}

#[cfg(test)]
#[path = "options_tests.rs"]
mod tests;
