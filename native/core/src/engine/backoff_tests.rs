use super::*;

#[test]
fn waits_double_up_to_the_cap_jittered_and_reset() {
    let mut b = Backoff::default();
    for ms in [100, 200, 400, 800, 1600, 3200, 5000, 5000] {
        let wait = b.failed();
        let full = Duration::from_millis(ms);
        assert!(
            wait >= full / 2 && wait <= full,
            "{wait:?} outside {full:?}"
        );
    }
    b.reset();
    assert!(b.failed() <= MIN);
}
