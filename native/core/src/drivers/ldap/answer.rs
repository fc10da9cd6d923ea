//! ldap3's results as OTP's eldap answers them: `ok`, `{ok, Value}`,
//! `{error, ResultName}`, search results as eldap.hrl's records (plain
//! tuples), every string a charlist of the bytes the server sent.

use ldap3::asn1::{StructureTag, PL};
use ldap3::{LdapResult, ResultEntry};

use crate::error::{Error, Result};
use crate::term::Term;

/// Bytes as eldap gives them: a list of byte values.
pub fn charlist(bytes: &[u8]) -> Term {
    Term::List(bytes.iter().map(|&b| Term::Int(i64::from(b))).collect())
}

/// The name eldap's ASN.1 module gives an LDAP result code (RFC 4511).
pub fn result_name(rc: u32) -> Term {
    let name = match rc {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        5 => "compareFalse",
        6 => "compareTrue",
        7 => "authMethodNotSupported",
        8 => "strongerAuthRequired",
        10 => "referral",
        11 => "adminLimitExceeded",
        12 => "unavailableCriticalExtension",
        13 => "confidentialityRequired",
        14 => "saslBindInProgress",
        16 => "noSuchAttribute",
        17 => "undefinedAttributeType",
        18 => "inappropriateMatching",
        19 => "constraintViolation",
        20 => "attributeOrValueExists",
        21 => "invalidAttributeSyntax",
        32 => "noSuchObject",
        33 => "aliasProblem",
        34 => "invalidDNSyntax",
        36 => "aliasDereferencingProblem",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        54 => "loopDetect",
        64 => "namingViolation",
        65 => "objectClassViolation",
        66 => "notAllowedOnNonLeaf",
        67 => "notAllowedOnRDN",
        68 => "entryAlreadyExists",
        69 => "objectClassModsProhibited",
        71 => "affectsMultipleDSAs",
        80 => "other",
        // What the ASN.1 runtime makes of a code past the extension marker.
        n => return Term::tuple(vec![Term::atom("asn1_enum"), Term::Int(i64::from(n))]),
    };
    Term::atom(name)
}

fn referral(result: &LdapResult) -> Term {
    let refs = result.refs.iter().map(|r| charlist(r.as_bytes())).collect();
    Term::ok(Term::tuple(vec![Term::atom("referral"), Term::List(refs)]))
}

/// `ok`, `{ok, {referral, URIs}}` or `{error, ResultName}`: what eldap's
/// bind, add, delete, modify and modify_dn answer.
pub fn plain(result: &LdapResult) -> Term {
    match result.rc {
        0 => Term::atom("ok"),
        10 => referral(result),
        rc => Term::error(result_name(rc)),
    }
}

/// eldap's `modify_password/3,4`: `ok`, `{ok, GeneratedPassword}`, or
/// `{error, {response, ResultName}}`.
pub fn password(result: &LdapResult, value: Option<&[u8]>) -> Result<Term> {
    match result.rc {
        0 => match value {
            None => Ok(Term::atom("ok")),
            Some(v) => Ok(Term::ok(charlist(&generated_password(v)?))),
        },
        10 => Ok(referral(result)),
        rc => Ok(Term::error(Term::tuple(vec![
            Term::atom("response"),
            result_name(rc),
        ]))),
    }
}

/// RFC 3062: `SEQUENCE { genPasswd [0] OCTET STRING OPTIONAL }`.
fn generated_password(value: &[u8]) -> Result<Vec<u8>> {
    let malformed = || Error::Server("ldap: malformed password modify response".into());
    let (_, tag) = ldap3::asn1::parse_tag(value).map_err(|_| malformed())?;
    match tag.payload {
        PL::C(inner) => match inner.into_iter().find(|t| t.id == 0) {
            Some(StructureTag {
                payload: PL::P(p), ..
            }) => Ok(p),
            _ => Ok(vec![]),
        },
        PL::P(_) => Err(malformed()),
    }
}

/// `{ok, #eldap_search_result{entries, referrals, controls}}`. A search cut
/// short by `size_limit` answers the entries it got, as eldap does; like
/// eldap, entries come last-received first.
pub fn search(entries: Vec<ResultEntry>, result: &LdapResult) -> Result<Term> {
    match result.rc {
        0 | 4 => {}
        10 => return Ok(referral(result)),
        rc => return Ok(Term::error(result_name(rc))),
    }
    let entries = entries
        .into_iter()
        .rev()
        .map(|e| entry(e.0))
        .collect::<Result<Vec<_>>>()?;
    let controls = if result.ctrls.is_empty() {
        Term::atom("asn1_NOVALUE")
    } else {
        Term::List(
            result
                .ctrls
                .iter()
                .map(|c| {
                    let raw = &c.1;
                    Term::tuple(vec![
                        Term::atom("Control"),
                        charlist(raw.ctype.as_bytes()),
                        Term::from(raw.crit),
                        raw.val
                            .as_deref()
                            .map_or_else(|| Term::atom("asn1_NOVALUE"), charlist),
                    ])
                })
                .collect(),
        )
    };
    Ok(Term::ok(Term::tuple(vec![
        Term::atom("eldap_search_result"),
        Term::List(entries),
        Term::List(vec![]),
        controls,
    ])))
}

/// `#eldap_entry{object_name, attributes = [{Name, [Value]}]}` from RFC
/// 4511's SearchResultEntry, in the server's order, bytes kept as sent.
fn entry(tag: StructureTag) -> Result<Term> {
    let malformed = || Error::Server("ldap: malformed search result entry".into());
    let constructed = |t: StructureTag| match t.payload {
        PL::C(items) => Ok(items),
        PL::P(_) => Err(malformed()),
    };
    let primitive = |t: StructureTag| match t.payload {
        PL::P(bytes) => Ok(bytes),
        PL::C(_) => Err(malformed()),
    };
    let mut parts = constructed(tag)?.into_iter();
    let dn = primitive(parts.next().ok_or_else(malformed)?)?;
    let attrs = constructed(parts.next().ok_or_else(malformed)?)?
        .into_iter()
        .map(|attr| {
            let mut pair = constructed(attr)?.into_iter();
            let name = primitive(pair.next().ok_or_else(malformed)?)?;
            let values = match pair.next() {
                Some(set) => constructed(set)?
                    .into_iter()
                    .map(|v| primitive(v).map(|b| charlist(&b)))
                    .collect::<Result<Vec<_>>>()?,
                None => vec![],
            };
            Ok(Term::tuple(vec![charlist(&name), Term::List(values)]))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Term::tuple(vec![
        Term::atom("eldap_entry"),
        charlist(&dn),
        Term::List(attrs),
    ]))
}
