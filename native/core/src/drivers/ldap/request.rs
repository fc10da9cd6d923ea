//! MongooseIM 6.3's LDAP requests, `{F, Args}` with `F` a function of OTP's
//! eldap and `Args` what follows its handle, read into what ldap3 sends.
//! Strings come as charlists (eldap's form) or binaries; filters as the
//! tuples eldap's constructors build (`eldap:equalityMatch/2`, ...), turned
//! into RFC 4515 text with every value escaped.

use std::collections::HashSet;
use std::fmt::Write;

use ldap3::{DerefAliases, Mod, Scope};

use crate::error::{Error, Result};
use crate::term::Term;

pub enum LdapRequest {
    Bind {
        dn: String,
        password: String,
    },
    Search(Search),
    Add {
        dn: String,
        attrs: Vec<(Vec<u8>, HashSet<Vec<u8>>)>,
    },
    Delete {
        dn: String,
    },
    Modify {
        dn: String,
        mods: Vec<Mod<Vec<u8>>>,
    },
    ModifyPassword {
        dn: Option<String>,
        new: Option<String>,
        old: Option<String>,
    },
    ModifyDn {
        dn: String,
        new_rdn: String,
        delete_old: bool,
        new_superior: Option<String>,
    },
}

/// eldap's `#eldap_search{}` defaults: whole subtree, aliases always
/// dereferenced, every user attribute, no size or time limit.
pub struct Search {
    pub base: String,
    pub filter: String,
    pub scope: Scope,
    pub deref: DerefAliases,
    pub attributes: Vec<String>,
    pub size_limit: i32,
    pub time_limit: i32,
    pub types_only: bool,
}

fn bad(message: String) -> Error {
    Error::BadRequest(message)
}

/// The bytes of a charlist, a binary or an iolist.
fn bytes(t: &Term, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    match t {
        Term::Bin(_) | Term::List(_) if t.to_iodata(&mut out) => Ok(out),
        _ => Err(bad(format!(
            "{what}: expected a string, got {}",
            t.describe()
        ))),
    }
}

fn text(t: &Term, what: &str) -> Result<String> {
    String::from_utf8(bytes(t, what)?).map_err(|_| bad(format!("{what}: not UTF-8 text")))
}

/// A password: like `text`, but an error never shows the value.
fn secret(t: &Term, what: &str) -> Result<String> {
    let mut out = Vec::new();
    match t {
        Term::Bin(_) | Term::List(_) if t.to_iodata(&mut out) => {
            String::from_utf8(out).map_err(|_| bad(format!("{what}: not UTF-8 text")))
        }
        _ => Err(bad(format!("{what}: expected a string"))),
    }
}

/// eldap's `optional/1`: an empty string means the field is absent.
fn optional(t: &Term, what: &str) -> Result<Option<String>> {
    text(t, what).map(|s| (!s.is_empty()).then_some(s))
}

fn list<'a>(t: &'a Term, what: &str) -> Result<&'a [Term]> {
    match t {
        Term::List(items) => Ok(items),
        _ => Err(bad(format!(
            "{what}: expected a list, got {}",
            t.describe()
        ))),
    }
}

/// `{Tag, Fields...}` with `Tag` the record name `tag`.
fn record<'a>(t: &'a Term, tag: &str, fields: usize) -> Option<&'a [Term]> {
    match t {
        Term::Tuple(items) if items.len() == fields + 1 && items[0].as_atom() == Some(tag) => {
            Some(&items[1..])
        }
        _ => None,
    }
}

impl LdapRequest {
    pub fn parse(request: Term) -> Result<LdapRequest> {
        let (function, args) = match &request {
            Term::Tuple(t) if t.len() == 2 => match (t[0].as_atom(), &t[1]) {
                (Some(f), Term::List(args)) => (f, args.as_slice()),
                _ => return Err(expected_form(&request)),
            },
            _ => return Err(expected_form(&request)),
        };
        let arity = |n: usize| {
            if args.len() == n {
                Ok(())
            } else {
                Err(bad(format!(
                    "eldap:{function} takes {n} arguments after the handle, got {}",
                    args.len()
                )))
            }
        };
        match function {
            "simple_bind" => {
                arity(2)?;
                Ok(LdapRequest::Bind {
                    dn: text(&args[0], "simple_bind: DN")?,
                    password: secret(&args[1], "simple_bind: password")?,
                })
            }
            "search" => {
                arity(1)?;
                Ok(LdapRequest::Search(Search::parse(&args[0])?))
            }
            "add" => {
                arity(2)?;
                let attrs = list(&args[1], "add: attributes")?
                    .iter()
                    .map(|a| match a {
                        Term::Tuple(kv) if kv.len() == 2 => {
                            Ok((bytes(&kv[0], "add: attribute")?, values(&kv[1], "add")?))
                        }
                        _ => Err(bad(format!(
                            "add: expected {{Attribute, [Value]}}, got {}",
                            a.describe()
                        ))),
                    })
                    .collect::<Result<_>>()?;
                Ok(LdapRequest::Add {
                    dn: text(&args[0], "add: DN")?,
                    attrs,
                })
            }
            "delete" => {
                arity(1)?;
                Ok(LdapRequest::Delete {
                    dn: text(&args[0], "delete: DN")?,
                })
            }
            "modify" => {
                arity(2)?;
                let mods = list(&args[1], "modify: modifications")?
                    .iter()
                    .map(modification)
                    .collect::<Result<_>>()?;
                Ok(LdapRequest::Modify {
                    dn: text(&args[0], "modify: DN")?,
                    mods,
                })
            }
            "modify_password" => {
                if !(2..=3).contains(&args.len()) {
                    arity(2)?;
                }
                // eldap's optional/1: an empty string leaves the field out.
                let password =
                    |t: &Term, what: &str| secret(t, what).map(|s| (!s.is_empty()).then_some(s));
                let old = match args.get(2) {
                    Some(old) => password(old, "modify_password: old password")?,
                    None => None,
                };
                Ok(LdapRequest::ModifyPassword {
                    dn: optional(&args[0], "modify_password: DN")?,
                    new: password(&args[1], "modify_password: new password")?,
                    old,
                })
            }
            "modify_dn" => {
                arity(4)?;
                let delete_old = match args[2].as_atom() {
                    Some("true") => true,
                    Some("false") => false,
                    _ => {
                        return Err(bad(format!(
                            "modify_dn: DeleteOldRDN must be a boolean, got {}",
                            args[2].describe()
                        )))
                    }
                };
                Ok(LdapRequest::ModifyDn {
                    dn: text(&args[0], "modify_dn: DN")?,
                    new_rdn: text(&args[1], "modify_dn: new RDN")?,
                    delete_old,
                    new_superior: optional(&args[3], "modify_dn: new superior")?,
                })
            }
            other => Err(bad(format!(
                "eldap:{other} is not a request an ldap pool carries; expected simple_bind, \
                 search, add, delete, modify, modify_password or modify_dn"
            ))),
        }
    }
}

fn expected_form(request: &Term) -> Error {
    bad(format!(
        "expected {{EldapFunction, Args}}, got {}",
        request.describe()
    ))
}

fn values(t: &Term, what: &str) -> Result<HashSet<Vec<u8>>> {
    list(t, &format!("{what}: values"))?
        .iter()
        .map(|v| bytes(v, &format!("{what}: value")))
        .collect()
}

/// `eldap:mod_add/2`, `mod_delete/2`, `mod_replace/2`:
/// `#'ModifyRequest_changes_SEQOF'{operation, modification = #'PartialAttribute'{type, vals}}`.
fn modification(t: &Term) -> Result<Mod<Vec<u8>>> {
    let wrong = || {
        bad(format!(
            "modify: expected a modification from eldap:mod_add/2, mod_delete/2 or \
             mod_replace/2, got {}",
            t.describe()
        ))
    };
    let fields = record(t, "ModifyRequest_changes_SEQOF", 2).ok_or_else(wrong)?;
    let attr = record(&fields[1], "PartialAttribute", 2).ok_or_else(wrong)?;
    let name = bytes(&attr[0], "modify: attribute")?;
    let vals = values(&attr[1], "modify")?;
    match fields[0].as_atom() {
        Some("add") => Ok(Mod::Add(name, vals)),
        Some("delete") => Ok(Mod::Delete(name, vals)),
        Some("replace") => Ok(Mod::Replace(name, vals)),
        _ => Err(wrong()),
    }
}

impl Search {
    /// eldap's search options: a list of `{Option, Value}`.
    fn parse(opts: &Term) -> Result<Search> {
        let mut search = Search {
            base: String::new(),
            filter: String::new(),
            scope: Scope::Subtree,
            deref: DerefAliases::Always,
            attributes: vec![],
            size_limit: 0,
            time_limit: 0,
            types_only: false,
        };
        let mut filter = None;
        for opt in list(opts, "search: options")? {
            let (key, value) = match opt {
                Term::Tuple(kv) if kv.len() == 2 => (kv[0].as_atom().unwrap_or(""), &kv[1]),
                _ => ("", opt),
            };
            let limit = |what: &str| match value {
                Term::Int(n) if (0..=i64::from(i32::MAX)).contains(n) => Ok(*n as i32),
                _ => Err(bad(format!(
                    "search: {what} must be a non-negative integer, got {}",
                    value.describe()
                ))),
            };
            match key {
                "base" => search.base = text(value, "search: base")?,
                "filter" => filter = Some(value),
                "scope" => search.scope = scope(value)?,
                "deref" => search.deref = deref(value)?,
                "attributes" => {
                    search.attributes = list(value, "search: attributes")?
                        .iter()
                        .map(|a| text(a, "search: attribute"))
                        .collect::<Result<_>>()?
                }
                "size_limit" => search.size_limit = limit("size_limit")?,
                "timeout" => search.time_limit = limit("timeout")?,
                "types_only" => {
                    search.types_only = match value.as_atom() {
                        Some("true") => true,
                        Some("false") => false,
                        _ => return Err(bad("search: types_only must be a boolean".into())),
                    }
                }
                _ => {
                    return Err(bad(format!(
                        "search: unknown option {}; expected base, filter, scope, deref, \
                         attributes, size_limit, timeout or types_only",
                        opt.describe()
                    )))
                }
            }
        }
        let filter = filter.ok_or_else(|| bad("search: the filter option is required".into()))?;
        let mut out = String::new();
        write_filter(&mut out, filter, 0)?;
        // ldap3 parses the text again when sending; refusing here answers at once.
        ldap3::parse_filter(&out).map_err(|_| {
            bad(format!(
                "search: the filter {} is not valid",
                filter.describe()
            ))
        })?;
        search.filter = out;
        Ok(search)
    }
}

fn scope(t: &Term) -> Result<Scope> {
    match t.as_atom() {
        Some("baseObject") => Ok(Scope::Base),
        Some("singleLevel") => Ok(Scope::OneLevel),
        Some("wholeSubtree") => Ok(Scope::Subtree),
        _ => Err(bad(format!(
            "search: unknown scope {}; expected baseObject, singleLevel or wholeSubtree",
            t.describe()
        ))),
    }
}

fn deref(t: &Term) -> Result<DerefAliases> {
    match t.as_atom() {
        Some("neverDerefAliases") => Ok(DerefAliases::Never),
        Some("derefInSearching") => Ok(DerefAliases::Searching),
        Some("derefFindingBaseObj") => Ok(DerefAliases::Finding),
        Some("derefAlways") => Ok(DerefAliases::Always),
        _ => Err(bad(format!(
            "search: unknown deref {}; expected neverDerefAliases, derefInSearching, \
             derefFindingBaseObj or derefAlways",
            t.describe()
        ))),
    }
}

/// Filters nest no deeper than this; deeper ones are refused, not recursed into.
const MAX_FILTER_DEPTH: usize = 64;

/// Writes an eldap filter tuple as RFC 4515 text.
fn write_filter(out: &mut String, f: &Term, depth: usize) -> Result<()> {
    let unknown = || {
        bad(format!(
            "search: unknown filter {}; build filters with eldap's functions \
             (equalityMatch/2, substrings/2, present/1, 'and'/1, ...)",
            f.describe()
        ))
    };
    if depth > MAX_FILTER_DEPTH {
        return Err(bad(format!(
            "search: filters nest at most {MAX_FILTER_DEPTH} deep"
        )));
    }
    let Term::Tuple(t) = f else {
        return Err(unknown());
    };
    if t.len() != 2 {
        return Err(unknown());
    }
    let (kind, arg) = (t[0].as_atom().ok_or_else(unknown)?, &t[1]);
    out.push('(');
    match kind {
        "and" | "or" => {
            out.push(if kind == "and" { '&' } else { '|' });
            for sub in list(arg, "search: filter")? {
                write_filter(out, sub, depth + 1)?;
            }
        }
        "not" => {
            out.push('!');
            write_filter(out, arg, depth + 1)?;
        }
        "equalityMatch" | "greaterOrEqual" | "lessOrEqual" | "approxMatch" => {
            let ava = record(arg, "AttributeValueAssertion", 2).ok_or_else(unknown)?;
            attribute(out, &ava[0])?;
            out.push_str(match kind {
                "equalityMatch" => "=",
                "greaterOrEqual" => ">=",
                "lessOrEqual" => "<=",
                _ => "~=",
            });
            escaped(out, &bytes(&ava[1], "search: filter value")?);
        }
        "present" => {
            attribute(out, arg)?;
            out.push_str("=*");
        }
        "substrings" => {
            let sf = record(arg, "SubstringFilter", 2).ok_or_else(unknown)?;
            attribute(out, &sf[0])?;
            out.push('=');
            substrings(out, list(&sf[1], "search: substrings")?)?;
        }
        "extensibleMatch" => {
            let mra = record(arg, "MatchingRuleAssertion", 4).ok_or_else(unknown)?;
            let set = |t: &Term| t.as_atom() != Some("asn1_NOVALUE");
            if set(&mra[1]) {
                attribute(out, &mra[1])?;
            }
            if mra[3].as_atom() == Some("true") {
                out.push_str(":dn");
            }
            if set(&mra[0]) {
                out.push(':');
                attribute(out, &mra[0])?;
            }
            out.push_str(":=");
            escaped(out, &bytes(&mra[2], "search: filter value")?);
        }
        _ => return Err(unknown()),
    }
    out.push(')');
    Ok(())
}

/// `[{initial, V}, {any, V}, ..., {final, V}]`: `initial` only first,
/// `final` only last, `any` anywhere.
fn substrings(out: &mut String, parts: &[Term]) -> Result<()> {
    if parts.is_empty() {
        return Err(bad("search: substrings need at least one part".into()));
    }
    let last = parts.len() - 1;
    let mut ends_with_final = false;
    for (i, part) in parts.iter().enumerate() {
        let (key, value) = match part {
            Term::Tuple(kv) if kv.len() == 2 => (kv[0].as_atom(), &kv[1]),
            _ => (None, part),
        };
        let value = bytes(value, "search: substring")?;
        match key {
            Some("initial") if i == 0 => {}
            Some("any") => out.push('*'),
            Some("final") if i == last => {
                out.push('*');
                ends_with_final = true;
            }
            _ => {
                let form = "[{initial, V}, {any, V}, ..., {final, V}]";
                return Err(bad(format!(
                    "search: substrings are {form}, got {}",
                    part.describe()
                )));
            }
        }
        escaped(out, &value);
    }
    if !ends_with_final {
        out.push('*');
    }
    Ok(())
}

/// An attribute description: letters, digits, `-`, `.` and `;` options.
fn attribute(out: &mut String, t: &Term) -> Result<()> {
    let name = text(t, "search: filter attribute")?;
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b';'));
    if !valid {
        return Err(bad(format!(
            "search: {} is not an attribute description",
            t.describe()
        )));
    }
    out.push_str(&name);
    Ok(())
}

/// RFC 4515 escaping; every byte outside printable ASCII is escaped too.
fn escaped(out: &mut String, value: &[u8]) {
    for &b in value {
        if b.is_ascii_graphic() && !matches!(b, b'*' | b'(' | b')' | b'\\') || b == b' ' {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\{b:02x}");
        }
    }
}

#[cfg(test)]
pub(super) fn filter_text(f: &Term) -> Result<String> {
    let mut out = String::new();
    write_filter(&mut out, f, 0)?;
    Ok(out)
}
