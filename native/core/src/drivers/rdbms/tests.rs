//! Config reading, SQL splitting, and the driver against the PostgreSQL and
//! MariaDB servers on loopback.

use super::pgsql::{numeric_from_int, numeric_to_term, pg_placeholders};
use super::*;
use crate::config::{Node, PoolSettings, PoolType};
use crate::engine::lease::testing::{keep, taken};
use crate::engine::lease::{self, AnyLease};
use crate::engine::pool::{AnyPool, Pool};
use crate::engine::reply::oneshot;
use crate::engine::strategy::{Choice, Strategy};

fn kv(k: &str, v: Term) -> (Term, Term) {
    (Term::atom(k), v)
}

fn pg_conf() -> Term {
    Term::Map(vec![
        kv("driver", Term::atom("pgsql")),
        kv("host", Term::from("127.0.0.1")),
        kv("database", Term::from("test")),
        kv("username", Term::from("postgres")),
        kv("password", Term::from("")),
    ])
}

fn my_conf() -> Term {
    Term::Map(vec![
        kv("driver", Term::atom("mysql")),
        kv("host", Term::from("127.0.0.1")),
        kv("database", Term::from("test")),
        kv("username", Term::from("root")),
        kv("password", Term::from("")),
    ])
}

fn read(term: &Term) -> Result<RdbmsConfig> {
    RdbmsConfig::read(&Node::new("outgoing_pools.rdbms.default.connection", term))
}

fn with(base: Term, extra: Vec<(Term, Term)>) -> Term {
    let Term::Map(mut pairs) = base else {
        unreachable!()
    };
    pairs.extend(extra);
    Term::Map(pairs)
}

#[test]
fn kinds() {
    assert_eq!(statement_kinds("SELECT 1"), vec![Kind::Rows]);
    assert_eq!(
        statement_kinds("insert into t values ('a;b'); (select 2); -- x;\n update t set a=1"),
        vec![Kind::Dml, Kind::Rows, Kind::Dml]
    );
    assert_eq!(statement_kinds("BEGIN;"), vec![Kind::Other]);
    assert_eq!(statement_kinds("  ;  "), Vec::<Kind>::new());
    assert_eq!(statement_kinds("SELECT 'it\\'s;'"), vec![Kind::Rows]);
}

#[test]
fn placeholders() {
    assert_eq!(pg_placeholders("a = ? AND b = ?"), "a = $1 AND b = $2");
}

#[test]
fn numeric_round_trip() {
    for i in [0i64, 1, -1, 9999, 10000, 123456789, -987654321012, i64::MAX] {
        assert_eq!(
            numeric_to_term(&numeric_from_int(i)),
            Some(Term::Int(i)),
            "{i}"
        );
    }
}

#[test]
fn config_forms() {
    let c = read(&pg_conf()).unwrap();
    assert_eq!(c.engine, Engine::Pgsql);
    assert_eq!(c.port, 5432);
    assert_eq!(read(&my_conf()).unwrap().port, 3306);
    let c = read(&with(
        pg_conf(),
        vec![kv("keepalive_interval", Term::Int(10))],
    ))
    .unwrap();
    assert_eq!(c.keepalive_interval, Some(Duration::from_secs(10)));

    let e = read(&with(pg_conf(), vec![kv("port", Term::from("5432"))])).unwrap_err();
    assert!(e.to_string().contains("connection.port"), "{e}");
    let e = read(&Term::Map(vec![kv("driver", Term::atom("cockroachdb"))])).unwrap_err();
    assert!(e.to_string().contains("not supported"), "{e}");
    // odbc: the connection string, required, and nothing of the other drivers.
    let e = read(&Term::Map(vec![kv("driver", Term::atom("odbc"))])).unwrap_err();
    assert!(
        e.to_string().contains("connection.settings: required"),
        "{e}"
    );
    let odbc = |extra| {
        let mut pairs = vec![
            kv("driver", Term::atom("odbc")),
            kv("settings", Term::from("DSN=db;UID=u;PWD=hunter2")),
        ];
        pairs.extend(extra);
        read(&Term::Map(pairs))
    };
    let c = odbc(vec![]).unwrap();
    assert_eq!(c.target(), "DSN=db;UID=u;PWD=<secret>");
    // A URL is no connection string: refused without showing its password.
    for url in [
        "pgsql://user:hunter2@127.0.0.1/test",
        "DSN=x;pgsql://u:hunter2@h",
    ] {
        let e = read(&Term::Map(vec![
            kv("driver", Term::atom("odbc")),
            kv("settings", Term::from(url)),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("KEY=VALUE") && !e.contains("hunter2"), "{e}");
    }
    let e = odbc(vec![kv("host", Term::from("h"))]).unwrap_err();
    assert!(e.to_string().contains("host: unknown option"), "{e}");
    let e = read(&Term::Map(vec![kv("host", Term::from("h"))])).unwrap_err();
    assert!(e.to_string().contains("connection.driver: required"), "{e}");
    let e = read(&with(pg_conf(), vec![kv("pasword", Term::from("x"))])).unwrap_err();
    assert!(e.to_string().contains("pasword: unknown option"), "{e}");

    // TLS: required is pgsql only, the rest goes through read_tls.
    let tls = Term::Map(vec![
        kv("required", Term::atom("true")),
        kv("verify_peer", Term::atom("false")),
    ]);
    let c = read(&with(pg_conf(), vec![kv("tls", tls.clone())])).unwrap();
    assert_eq!(
        c.tls,
        Some(RdbmsTls {
            required: true,
            ..RdbmsTls::default()
        })
    );
    let e = read(&with(my_conf(), vec![kv("tls", tls)])).unwrap_err();
    assert!(e.to_string().contains("tls.required"), "{e}");
    let bad = Term::Map(vec![kv("cacertfile", Term::from("/nonexistent/ca.pem"))]);
    assert!(read(&with(pg_conf(), vec![kv("tls", bad)])).is_err());

    // Seed 000's legacy tuple, with and without a port, secrets unseen.
    let legacy = Term::List(vec![Term::tuple(vec![
        Term::atom("server"),
        Term::tuple(vec![
            Term::atom("pgsql"),
            Term::from("localhost"),
            Term::Int(5433),
            Term::from("db"),
            Term::from("user"),
            Term::from("s3cret"),
        ]),
    ])]);
    let c = read(&legacy).unwrap();
    assert_eq!(
        (c.engine, c.port, c.database.as_str()),
        (Engine::Pgsql, 5433, "db")
    );
    assert!(!format!("{c:?}").contains("s3cret"));
    let legacy = Term::List(vec![
        Term::tuple(vec![
            Term::atom("server"),
            Term::tuple(vec![
                Term::atom("mysql"),
                Term::from("localhost"),
                Term::from("db"),
                Term::from("user"),
                Term::from("pw"),
                Term::List(vec![Term::tuple(vec![
                    Term::atom("ssl"),
                    Term::atom("required"),
                ])]),
            ]),
        ]),
        Term::tuple(vec![Term::atom("keepalive_interval"), Term::Int(5)]),
    ]);
    let c = read(&legacy).unwrap();
    assert_eq!((c.engine, c.port), (Engine::Mysql, 3306));
    assert!(c.tls.is_some_and(|t| t.required));
    assert_eq!(c.keepalive_interval, Some(Duration::from_secs(5)));
}

async fn open(conf: Term, timeout_ms: u64) -> (RdbmsDriver, Conn) {
    let driver = RdbmsDriver::new(read(&conf).unwrap(), timeout_ms).unwrap();
    let conn = driver.connect(0).await.unwrap();
    // What a worker does: runs the connection's own I/O.
    tokio::spawn(driver.closed(&conn));
    (driver, conn)
}

fn server(items: Vec<Term>) -> Result<RdbmsConfig> {
    read(&Term::List(vec![Term::tuple(vec![
        Term::atom("server"),
        Term::Tuple(items),
    ])]))
}

fn refused(items: Vec<Term>) -> String {
    let e = server(items).unwrap_err().to_string();
    assert!(!e.contains("S3cr3t"), "{e}");
    e
}

#[test]
fn legacy_elements_are_checked_by_position() {
    let pw = || Term::from("S3cr3t");
    // A port that is not an integer is refused, not taken for the database.
    let e = refused(vec![
        Term::atom("pgsql"),
        Term::from("127.0.0.1"),
        Term::from("5432"),
        Term::from("test"),
        Term::from("postgres"),
        pw(),
    ]);
    assert!(
        e.starts_with(
            "outgoing_pools.rdbms.default.connection.server: element 3 (port): \
             expected an integer between 1 and 65535, got "
        ),
        "{e}"
    );
    let e = refused(vec![
        Term::atom("pgsql"),
        Term::from("h"),
        Term::Int(70000),
        Term::from("db"),
        Term::from("u"),
        pw(),
    ]);
    assert!(
        e.contains("server: element 3 (port): expected an integer"),
        "{e}"
    );
    let e = refused(vec![
        Term::atom("mysql"),
        Term::from("h"),
        Term::Int(3306),
        Term::Int(7),
        Term::from("u"),
        pw(),
    ]);
    assert!(
        e.contains("server: element 4 (database): expected a string"),
        "{e}"
    );
    let e = refused(vec![
        Term::atom("mysql"),
        Term::from("h"),
        Term::from("db"),
        Term::from("u"),
        Term::tuple(vec![pw()]),
    ]);
    assert!(
        e.contains("server: element 5 (password): expected a string, got a tuple"),
        "{e}"
    );
    let e = refused(vec![Term::atom("pgsql"), Term::from("h"), pw()]);
    assert!(e.contains("got a tuple of 3 elements"), "{e}");

    // SSL: only the options that are applied, with their types.
    let ssl = |opts: Vec<Term>| {
        vec![
            Term::atom("pgsql"),
            Term::from("h"),
            Term::Int(5432),
            Term::from("db"),
            Term::from("u"),
            pw(),
            Term::List(opts),
        ]
    };
    let kv = |k: &str, v: Term| Term::tuple(vec![Term::atom(k), v]);
    let e = refused(ssl(vec![kv("ssl", Term::atom("maybe"))]));
    assert!(
        e.contains("server: element 7 (ssl).ssl: expected one of"),
        "{e}"
    );
    let e = refused(ssl(vec![
        kv("ssl", Term::atom("true")),
        kv("ssl_opts", Term::List(vec![kv("depth", Term::Int(2))])),
    ]));
    assert!(e.contains("ssl_opts.depth: unknown option"), "{e}");
    let e = refused(ssl(vec![
        kv("ssl", Term::atom("true")),
        kv(
            "ssl_opts",
            Term::List(vec![kv("cacertfile", Term::from("/nonexistent/ca.pem"))]),
        ),
    ]));
    assert!(e.contains("ssl_opts.cacertfile: cannot read"), "{e}");

    // Seed 000's MySQL form: the SSL element is the ssl options.
    let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let c = server(vec![
        Term::atom("mysql"),
        Term::from("h"),
        Term::Int(3306),
        Term::from("db"),
        Term::from("u"),
        pw(),
        Term::List(vec![
            kv("verify", Term::atom("verify_peer")),
            kv("cacertfile", Term::from(ca)),
            kv("server_name_indication", Term::atom("disable")),
        ]),
    ])
    .unwrap();
    assert_eq!(
        c.tls,
        Some(RdbmsTls {
            verify_peer: true,
            cacertfile: Some(ca.to_string()),
            ..RdbmsTls::default()
        })
    );
}

#[test]
fn password_not_utf8_is_described_not_shown() {
    let Term::Map(mut conf) = pg_conf() else {
        unreachable!()
    };
    conf.retain(|(k, _)| *k != Term::atom("password"));
    conf.push(kv("password", Term::bin(vec![255u8, 254, b'S'])));
    assert_eq!(
        read(&Term::Map(conf)).unwrap_err().to_string(),
        "outgoing_pools.rdbms.default.connection.password: \
         expected UTF-8 text, got a binary that is not valid UTF-8"
    );
}

async fn q(d: &RdbmsDriver, c: &Conn, sql: &str) -> Term {
    d.execute(
        c.clone(),
        parse_request(Term::tuple(vec![Term::atom("sql_query"), Term::from(sql)])).unwrap(),
    )
    .await
    .answer
}

async fn x(d: &RdbmsDriver, c: &Conn, name: &str, sql: &str, params: Vec<Term>) -> Term {
    d.execute(
        c.clone(),
        parse_request(Term::tuple(vec![
            Term::atom("sql_execute"),
            Term::atom(name),
            Term::from(sql),
            Term::List(params),
        ]))
        .unwrap(),
    )
    .await
    .answer
}

fn selected(rows: Vec<Vec<Term>>) -> Term {
    Term::tuple(vec![
        Term::atom("selected"),
        Term::List(rows.into_iter().map(Term::Tuple).collect()),
    ])
}

fn updated(n: i64) -> Term {
    Term::tuple(vec![Term::atom("updated"), Term::Int(n)])
}

#[tokio::test]
async fn pgsql_queries_and_types() {
    let (d, c) = open(pg_conf(), 5000).await;
    assert_eq!(
        q(&d, &c, "SELECT 1").await,
        selected(vec![vec![Term::from("1")]])
    );
    q(&d, &c, "DROP TABLE IF EXISTS mn_rs_pg").await;
    assert_eq!(
        q(
            &d,
            &c,
            "CREATE TABLE mn_rs_pg (id INT PRIMARY KEY, big BIGINT, s TEXT, b BYTEA, f BOOLEAN)"
        )
        .await,
        updated(0)
    );
    let bytes = Term::bin(vec![0u8, 255, 128, 10]);
    let ins = "INSERT INTO mn_rs_pg VALUES (?, ?, ?, ?, ?)";
    assert_eq!(
        x(
            &d,
            &c,
            "ins",
            ins,
            vec![
                Term::Int(1),
                Term::Int(1 << 40),
                Term::from("zażółć"),
                bytes.clone(),
                Term::from(true)
            ]
        )
        .await,
        updated(1)
    );
    assert_eq!(
        x(
            &d,
            &c,
            "ins",
            ins,
            vec![
                Term::Int(2),
                Term::atom("null"),
                Term::atom("null"),
                Term::atom("null"),
                Term::from(false)
            ]
        )
        .await,
        updated(1)
    );
    assert_eq!(
        x(
            &d,
            &c,
            "ins",
            ins,
            vec![
                Term::Int(1),
                Term::Int(0),
                Term::from("x"),
                Term::from("y"),
                Term::from(false)
            ]
        )
        .await,
        Term::error(Term::atom("duplicate_key"))
    );
    assert_eq!(
        x(
            &d,
            &c,
            "sel",
            "SELECT id, big, s, b, f FROM mn_rs_pg ORDER BY id",
            vec![]
        )
        .await,
        selected(vec![
            vec![
                Term::Int(1),
                Term::Int(1 << 40),
                Term::from("zażółć"),
                bytes,
                Term::from(true)
            ],
            vec![
                Term::Int(2),
                Term::atom("null"),
                Term::atom("null"),
                Term::atom("null"),
                Term::from(false)
            ],
        ])
    );
    // The simple protocol gives text.
    assert_eq!(
        q(&d, &c, "SELECT id, f, s FROM mn_rs_pg WHERE id = 1").await,
        selected(vec![vec![
            Term::from("1"),
            Term::from("t"),
            Term::from("zażółć")
        ]])
    );
    assert_eq!(
        x(
            &d,
            &c,
            "cnt",
            "SELECT count(*), sum(big) FROM mn_rs_pg",
            vec![]
        )
        .await,
        selected(vec![vec![Term::Int(2), Term::Int(1 << 40)]])
    );
    let Term::Tuple(err) = q(&d, &c, "SELECT * FROM no_such_table").await else {
        panic!()
    };
    assert_eq!(err[0], Term::atom("error"));
    assert!(format!("{:?}", err[1]).contains("no_such_table"));
    assert_eq!(
        q(&d, &c, "UPDATE mn_rs_pg SET big = 0 RETURNING id").await,
        Term::tuple(vec![
            Term::atom("updated"),
            Term::Int(2),
            Term::List(vec![
                Term::tuple(vec![Term::from("1")]),
                Term::tuple(vec![Term::from("2")])
            ])
        ])
        .clone()
    );
    // The connection stays usable after errors.
    assert_eq!(
        q(&d, &c, "SELECT 2").await,
        selected(vec![vec![Term::from("2")]])
    );
    q(&d, &c, "DROP TABLE mn_rs_pg").await;
}

#[tokio::test]
async fn mysql_queries_and_types() {
    let (d, c) = open(my_conf(), 5000).await;
    assert_eq!(
        q(&d, &c, "SELECT 1").await,
        selected(vec![vec![Term::Int(1)]])
    );
    q(&d, &c, "DROP TABLE IF EXISTS mn_rs_my").await;
    assert_eq!(
        q(&d, &c, "CREATE TABLE mn_rs_my (id INT PRIMARY KEY, s VARCHAR(50), b BLOB, f TINYINT(1)) CHARACTER SET utf8mb4")
            .await,
        updated(0)
    );
    let bytes = Term::bin(vec![0u8, 255, 128, 10]);
    let ins = "INSERT INTO mn_rs_my VALUES (?, ?, ?, ?)";
    assert_eq!(
        x(
            &d,
            &c,
            "ins",
            ins,
            vec![
                Term::Int(1),
                Term::from("zażółć"),
                bytes.clone(),
                Term::from(true)
            ]
        )
        .await,
        updated(1)
    );
    assert_eq!(
        x(
            &d,
            &c,
            "ins",
            ins,
            vec![
                Term::Int(1),
                Term::from("x"),
                Term::from("y"),
                Term::from(false)
            ]
        )
        .await,
        Term::error(Term::atom("duplicate_key"))
    );
    assert_eq!(
        x(&d, &c, "sel", "SELECT id, s, b, f FROM mn_rs_my", vec![]).await,
        selected(vec![vec![
            Term::Int(1),
            Term::from("zażółć"),
            bytes.clone(),
            Term::Int(1)
        ]])
    );
    assert_eq!(
        q(&d, &c, "SELECT id, s, b, f, NULL FROM mn_rs_my").await,
        selected(vec![vec![
            Term::Int(1),
            Term::from("zażółć"),
            bytes,
            Term::Int(1),
            Term::atom("null")
        ]])
    );
    assert_eq!(
        q(&d, &c, "SELECT id FROM mn_rs_my WHERE id > 5").await,
        selected(vec![])
    );
    q(&d, &c, "DROP TABLE mn_rs_my").await;
}

fn sql(text: &str) -> Term {
    Term::tuple(vec![Term::atom("sql_query"), Term::from(text)])
}

/// A pool of `workers` on `conf`, as the NIF starts one.
async fn pool(conf: &Term, workers: usize) -> Arc<Pool<RdbmsDriver>> {
    let driver = RdbmsDriver::new(read(conf).unwrap(), 5000).unwrap();
    let settings = PoolSettings {
        kind: PoolType::Rdbms,
        workers,
        strategy: Strategy::Best,
        call_timeout_ms: 5000,
        max_worker_queue_len: None,
    };
    Pool::start(driver, settings).await.unwrap()
}

async fn call(pool: &Arc<Pool<RdbmsDriver>>, request: Term) -> Term {
    let (reply, answer) = oneshot();
    pool.submit(Choice::Strategy, request, reply).unwrap();
    answer.await.unwrap()
}

async fn lease(pool: &Arc<Pool<RdbmsDriver>>) -> Arc<dyn AnyLease> {
    let (reply, answer) = oneshot();
    pool.lease(Choice::Strategy, keep, reply).unwrap();
    taken(answer.await.unwrap())
}

fn is_error(t: &Term) -> bool {
    matches!(t, Term::Tuple(t) if t[0] == Term::atom("error"))
}

#[tokio::test]
async fn killed_connection_is_replaced_by_the_engine() {
    let pool = pool(&pg_conf(), 1).await;
    let (d2, c2) = open(pg_conf(), 5000).await;
    let Term::Tuple(t) = call(&pool, sql("SELECT pg_backend_pid()")).await else {
        panic!()
    };
    let Term::List(rows) = &t[1] else { panic!() };
    let Term::Tuple(row) = &rows[0] else { panic!() };
    let Term::Bin(pid) = &row[0] else { panic!() };
    let pid = String::from_utf8(pid.clone()).unwrap();
    q(&d2, &c2, &format!("SELECT pg_terminate_backend({pid})")).await;
    // The worker runs the connection's I/O: it sees the close and
    // reconnects before any request finds the connection dead.
    let reconnected = async {
        while pool.figures().is_none_or(|f| f.reconnects == 0) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), reconnected)
        .await
        .expect("reconnected");
    assert_eq!(
        call(&pool, sql("SELECT 1")).await,
        selected(vec![vec![Term::from("1")]])
    );
    assert!(format!("{:?}", pool.stats()).contains("connected,true"));
    pool.stop();
}

#[tokio::test]
async fn a_timeout_breaks_the_connection_only_when_the_server_did_not_cancel() {
    for (conf, sleep, breaks) in [
        // pgsql's statement_timeout cancels on the server: the connection stays.
        (pg_conf(), "SELECT pg_sleep(2)", false),
        // mysql's client gives up: the connection is replaced.
        (my_conf(), "SELECT SLEEP(2)", true),
    ] {
        let (d, c) = open(conf, 300).await;
        let t0 = std::time::Instant::now();
        let r = d
            .execute(c.clone(), parse_request(sql(sleep)).unwrap())
            .await;
        assert!(t0.elapsed() < Duration::from_millis(1500), "{:?}", r.answer);
        assert!(is_error(&r.answer), "{:?}", r.answer);
        assert_eq!(r.broken.is_some(), breaks, "{sleep}: {:?}", r.broken);
        if !breaks {
            let one = q(&d, &c, "SELECT 1").await;
            assert_eq!(one, selected(vec![vec![Term::from("1")]]));
        }
    }
}

#[tokio::test]
async fn a_lease_holds_the_worker_until_released_or_dropped() {
    for conf in [pg_conf(), my_conf()] {
        let pool = pool(&conf, 1).await;
        let table = "mn_rs_tx";
        call(&pool, sql(&format!("DROP TABLE IF EXISTS {table}"))).await;
        let create = format!("CREATE TABLE {table} (id INT PRIMARY KEY)");
        call(&pool, sql(&create)).await;

        let tx = lease(&pool).await;
        assert!(format!("{:?}", pool.stats()).contains("total_in_flight,1"));
        lease::testing::call(&tx, sql("BEGIN")).await;
        let insert = format!("INSERT INTO {table} VALUES (1)");
        assert_eq!(lease::testing::call(&tx, sql(&insert)).await, updated(1));
        // A pool request waits for the release.
        let (reply, mut waiting) = oneshot();
        let count = format!("SELECT count(*) FROM {table}");
        pool.submit(Choice::Strategy, sql(&count), reply).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(waiting.try_recv().is_err());
        lease::testing::call(&tx, sql("ROLLBACK")).await;
        tx.release(false);
        let counted = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        let Term::Tuple(t) = counted else { panic!() };
        assert!(format!("{:?}", t[1]).contains('0'), "{:?}", t[1]);
        // A released lease takes no more requests.
        let (reply, _) = oneshot();
        let late = tx.submit(sql("SELECT 3"), reply);
        assert!(matches!(late, Err(Error::BadRequest(_))), "{late:?}");

        // A lease dropped without a release (its owner died) rolls back.
        let tx = lease(&pool).await;
        lease::testing::call(&tx, sql("BEGIN")).await;
        let insert = format!("INSERT INTO {table} VALUES (2)");
        assert_eq!(lease::testing::call(&tx, sql(&insert)).await, updated(1));
        drop(tx);
        let r = call(&pool, sql(&format!("SELECT id FROM {table}"))).await;
        assert_eq!(r, selected(vec![]));
        call(&pool, sql(&format!("DROP TABLE {table}"))).await;
        pool.stop();
    }
}

#[test]
fn requests_are_checked() {
    let checkout = Term::tuple(vec![Term::atom("rdbms_checkout"), Term::atom("x")]);
    assert!(matches!(parse_request(checkout), Err(Error::BadRequest(_))));
    assert!(matches!(
        parse_request(Term::atom("rdbms_engine")),
        Ok(RdbmsRequest::Engine)
    ));
    assert!(parse_request(Term::tuple(vec![
        Term::atom("sql_query"),
        Term::tuple(vec![])
    ]))
    .is_err());
}

#[test]
fn queries_are_iodata_only() {
    let query = |q: Term| parse_request(Term::tuple(vec![Term::atom("sql_query"), q]));
    assert!(query(Term::List(vec![
        Term::from("SELECT "),
        Term::Int(b'1'.into())
    ]))
    .is_ok());
    for q in [
        Term::atom("not_iodata"),
        Term::Int(1),
        Term::List(vec![Term::from("SELECT "), Term::atom("one")]),
    ] {
        assert!(
            matches!(query(q.clone()), Err(Error::BadRequest(ref m)) if m.starts_with("query: expected iodata")),
            "{q:?}"
        );
    }
}

#[tokio::test]
async fn several_statements_in_one_query() {
    let (d, c) = open(pg_conf(), 5000).await;
    // In reverse order, as MongooseIM's epgsql backend gives them.
    assert_eq!(
        q(&d, &c, "SELECT 1; SELECT 2").await,
        Term::List(vec![
            selected(vec![vec![Term::from("2")]]),
            selected(vec![vec![Term::from("1")]]),
        ])
    );
    let (d, c) = open(my_conf(), 5000).await;
    assert_eq!(
        q(&d, &c, "SELECT 1; SELECT 2").await,
        Term::List(vec![
            selected(vec![vec![Term::Int(1)]]),
            selected(vec![vec![Term::Int(2)]]),
        ])
    );
}
