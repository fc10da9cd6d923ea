use super::*;

fn pair(k: &str, v: Term) -> Term {
    Term::tuple(vec![Term::atom(k), v])
}

#[test]
fn describe_hides_secrets_in_any_shape() {
    let secret = || Term::from("hunter2");
    let shapes = [
        pair("password", secret()),
        Term::List(vec![pair("password", secret()), Term::atom("junk")]),
        Term::Map(vec![(Term::atom("password"), Term::Tuple(vec![secret()]))]),
        Term::Tuple(vec![
            Term::atom("pgsql"),
            Term::from("127.0.0.1"),
            Term::Int(5432),
            secret(),
        ]),
        Term::from("pgsql://user:hunter2@127.0.0.1/db"),
    ];
    for t in shapes {
        let d = t.describe();
        assert!(!d.contains("hunter2"), "{d}");
    }
    assert_eq!(pair("password", secret()).describe(), "{password,<secret>}");
    assert_eq!(
        Term::from("pgsql://user:hunter2@127.0.0.1/db").describe(),
        "<<\"pgsql://<secret>@127.0.0.1/db\">>"
    );
}

#[test]
fn describe_shows_what_is_safe_and_stays_short() {
    assert_eq!(Term::from("6379").describe(), "<<\"6379\">>");
    let map = Term::Map(vec![(Term::from("port"), Term::Int(1))]);
    assert_eq!(map.describe(), "#{<<\"port\">> => 1}");
    let huge = Term::List((0..1_000_000).map(Term::Int).collect());
    let d = huge.describe();
    assert!(d.len() <= 110 && d.ends_with("..."), "{d}");
}
