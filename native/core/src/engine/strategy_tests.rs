//! Tests of `strategy`.

use super::*;

#[test]
fn names_round_trip() {
    for name in Strategy::NAMES {
        assert_eq!(Strategy::parse(name).unwrap().name(), name);
    }
    assert!(Strategy::parse("fastest_worker").is_err());
}

#[test]
fn least_loaded_prefers_first_on_ties() {
    assert_eq!(least_loaded([3, 1, 1, 2].into_iter()), Some((1, 1)));
    assert_eq!(least_loaded(std::iter::empty()), None);
}
