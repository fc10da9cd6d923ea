//! JIDs as the session table keys them: `user@server/resource`, already
//! lower-cased by the caller (MongooseIM's `jid:to_lower/1`).

use crate::error::{Error, Result};
use crate::term::Term;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Jid {
    pub user: Vec<u8>,
    pub server: Vec<u8>,
    pub resource: Vec<u8>,
}

impl Jid {
    pub fn new(user: &str, server: &str, resource: &str) -> Jid {
        Jid {
            user: user.as_bytes().to_vec(),
            server: server.as_bytes().to_vec(),
            resource: resource.as_bytes().to_vec(),
        }
    }

    /// `{LUser, LServer, LResource}` (binaries), or a `jid` record in
    /// either MongooseIM shape: `{jid, LUser, LServer, LResource}` or
    /// `{jid, User, Server, Resource, LUser, LServer, LResource}` (the
    /// lower-cased fields are used).
    pub fn from_term(t: &Term) -> Result<Jid> {
        let bad = || {
            Error::BadRequest(format!(
                "expected a JID {{User, Server, Resource}}, got {}",
                t.describe()
            ))
        };
        let Term::Tuple(items) = t else {
            return Err(bad());
        };
        let fields: &[Term] = match items.as_slice() {
            [u, s, r] => &[u.clone(), s.clone(), r.clone()],
            [tag, u, s, r] if tag.as_atom() == Some("jid") => &[u.clone(), s.clone(), r.clone()],
            [tag, _, _, _, lu, ls, lr] if tag.as_atom() == Some("jid") => {
                &[lu.clone(), ls.clone(), lr.clone()]
            }
            _ => return Err(bad()),
        };
        let part = |t: &Term| match t {
            Term::Bin(b) => Ok(b.clone()),
            Term::List(l) if l.is_empty() => Ok(vec![]),
            _ => Err(bad()),
        };
        let jid = Jid {
            user: part(&fields[0])?,
            server: part(&fields[1])?,
            resource: part(&fields[2])?,
        };
        if jid.server.is_empty() {
            return Err(bad());
        }
        Ok(jid)
    }

    /// `jid:to_binary/1`: `user@server/resource`, each separator only when
    /// its part is not empty.
    pub fn to_binary(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(self.user.len() + self.server.len() + self.resource.len() + 2);
        if !self.user.is_empty() {
            out.extend_from_slice(&self.user);
            out.push(b'@');
        }
        out.extend_from_slice(&self.server);
        if !self.resource.is_empty() {
            out.push(b'/');
            out.extend_from_slice(&self.resource);
        }
        out
    }

    pub fn bare(&self) -> Jid {
        Jid {
            user: self.user.clone(),
            server: self.server.clone(),
            resource: vec![],
        }
    }

    /// The keys a session is stored under: the full JID, then the bare JID
    /// when it differs (MongooseIM's `normalize_jid/1`).
    pub fn keys(&self) -> Vec<Vec<u8>> {
        if self.resource.is_empty() {
            vec![self.to_binary()]
        } else {
            vec![self.to_binary(), self.bare().to_binary()]
        }
    }
}
