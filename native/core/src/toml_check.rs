//! Checks a whole TOML file the way starting it would, without connecting:
//! every `[outgoing_pools.TYPE.TAG]` and `[modules.mod_global_distrib]`.

use crate::config::{pools_from_toml, toml_to_term, Node, PoolSettings, PoolType};
use crate::error::{Error, Result};
use crate::gd::config::GdConfig;
use crate::registry;
use crate::term::Term;

/// The number of sections checked, or the first error.
pub fn check_toml(text: &str) -> Result<usize> {
    let mut checked = 0;
    for pool in pools_from_toml(text)? {
        let field = |k: &str| pool.get(k).cloned().unwrap_or(Term::Map(vec![]));
        let (kind, tag) = (field("type"), field("tag"));
        let kind_name = kind.as_text().unwrap_or_default();
        let path = format!(
            "outgoing_pools.{kind_name}.{}",
            tag.as_text().unwrap_or_default()
        );
        let kind = PoolType::parse(&kind_name)
            .ok_or_else(|| Error::Config(format!("{path}: unknown pool type")))?;
        PoolSettings::read(kind, &Node::new(path.as_str(), &field("opts")))?;
        registry::validate(kind, &field("conn_opts"), &path)?;
        checked += 1;
    }
    let doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| Error::Config(format!("TOML syntax: {}", e.message())))?;
    let gd = doc
        .get("modules")
        .and_then(|m| m.get("mod_global_distrib"))
        .map(toml_to_term);
    if let Some(gd) = gd {
        GdConfig::read_options(&Node::new("modules.mod_global_distrib", &gd))?;
        checked += 1;
    }
    Ok(checked)
}
