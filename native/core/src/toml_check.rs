//! Checks a whole TOML file the way starting it would, without connecting:
//! every `[outgoing_pools.TYPE.TAG]` and `[modules.mod_global_distrib]`.

use crate::config::{parse_toml, pools_from_toml, toml_to_term, Node};
use crate::error::Result;
use crate::gd::config::GdConfig;

/// The number of sections checked, or the first error.
pub fn check_toml(text: &str) -> Result<usize> {
    // Reading the pools checks each of them.
    let mut checked = pools_from_toml(text)?.len();
    let doc = parse_toml(text)?;
    let gd = doc
        .get("modules")
        .and_then(|m| m.get("mod_global_distrib"))
        .map(toml_to_term);
    if let Some(gd) = gd {
        GdConfig::read_options(&Node::toml("modules.mod_global_distrib", &gd))?;
        checked += 1;
    }
    Ok(checked)
}
