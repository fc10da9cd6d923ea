use super::*;

#[test]
fn every_type_has_its_row() {
    for (i, t) in PoolType::ALL.into_iter().enumerate() {
        assert_eq!(KINDS[i].kind, t);
        assert_eq!(t.kind().kind, t);
    }
}
