//! MySQL/MariaDB: the text protocol and prepared statements.

use super::*;

pub(super) async fn my_simple(conn: &mut MySqlConnection, sql: &str) -> Outcome {
    let mut shaper = Shaper::new(Engine::Mysql, sql);
    let mut stream = sqlx::raw_sql(sql).fetch_many(&mut *conn);
    while let Some(item) = stream.try_next().await? {
        match item {
            Either::Right(row) => shaper.row(my_row(&row)),
            Either::Left(done) => shaper.done(done.rows_affected()),
        }
    }
    Ok(Ok(shaper.finish()))
}

pub(super) fn my_row(row: &MySqlRow) -> Term {
    let values = row
        .columns()
        .iter()
        .enumerate()
        .map(|(i, col)| {
            let Ok(v) = row.try_get_raw(i) else {
                return null();
            };
            if v.is_null() {
                return null();
            }
            let name = col.type_info().name().to_string();
            let decoded = match name.as_str() {
                "BOOLEAN" | "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" => {
                    <i64 as Decode<MySql>>::decode(v.clone())
                        .ok()
                        .map(Term::Int)
                }
                "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED"
                | "INT UNSIGNED" | "BIGINT UNSIGNED" | "YEAR" => {
                    <u64 as Decode<MySql>>::decode(v.clone())
                        .ok()
                        .and_then(|u| i64::try_from(u).ok())
                        .map(Term::Int)
                }
                "DOUBLE" | "FLOAT" => <f64 as Decode<MySql>>::decode(v.clone())
                    .ok()
                    .map(Term::Float),
                "DECIMAL" => <&str as Decode<MySql>>::decode(v.clone())
                    .ok()
                    .and_then(|s| {
                        s.parse::<i64>()
                            .map(Term::Int)
                            .ok()
                            .or_else(|| s.parse::<f64>().ok().map(Term::Float))
                    }),
                _ => None,
            };
            decoded.unwrap_or_else(|| {
                <&[u8] as Decode<MySql>>::decode(v)
                    .map(Term::bin)
                    .unwrap_or_else(|_| null())
            })
        })
        .collect();
    Term::Tuple(values)
}

pub(super) async fn my_execute(
    conn: &mut MySqlConnection,
    cache: &mut HashMap<String, Prepared>,
    name: &str,
    sql: &str,
    params: &[Term],
) -> Outcome {
    let fresh = !matches!(cache.get(name), Some(p) if p.sql == sql);
    if fresh {
        let statement = Statement::to_owned(&conn.prepare(sql).await?);
        cache.insert(
            name.to_string(),
            Prepared {
                sql: sql.to_string(),
                statement: Cached::My(statement),
                kind: statement_kinds(sql).first().copied().unwrap_or(Kind::Other),
            },
        );
    }
    let Some(Prepared {
        statement: Cached::My(statement),
        kind,
        ..
    }) = cache.get(name)
    else {
        return Ok(Err(
            Error::Internal("statement cache mismatch".into()).to_term()
        ));
    };
    let expected = match statement.parameters() {
        Some(Either::Right(n)) => n,
        Some(Either::Left(types)) => types.len(),
        None => 0,
    };
    if expected != params.len() {
        return Ok(Err(Term::error(charlist(&format!(
            "statement {name} takes {expected} parameters, got {}",
            params.len()
        )))));
    }
    let mut args = MySqlArguments::default();
    for (i, value) in params.iter().enumerate() {
        let added = match value {
            Term::Int(n) => args.add(*n),
            Term::Float(f) => args.add(*f),
            Term::Atom(a) if a == "true" => args.add(1i64),
            Term::Atom(a) if a == "false" => args.add(0i64),
            Term::Atom(a) if a == "null" || a == "undefined" => args.add(None::<String>),
            v => match param_bytes(v) {
                Some(bytes) => match String::from_utf8(bytes) {
                    Ok(s) => args.add(s),
                    Err(e) => args.add(e.into_bytes()),
                },
                None => {
                    return Ok(Err(Term::error(charlist(&format!(
                        "statement {name}, parameter {}: cannot send {v:?}",
                        i + 1
                    )))))
                }
            },
        };
        if let Err(e) = added {
            return Ok(Err(Term::error(charlist(&e.to_string()))));
        }
    }
    let kind = if !statement.columns().is_empty() {
        Kind::Rows
    } else {
        *kind
    };
    let mut rows = vec![];
    let mut affected = 0;
    {
        let mut stream = conn.fetch_many(statement.query_with(args));
        while let Some(item) = stream.try_next().await? {
            match item {
                Either::Right(row) => rows.push(my_row(&row)),
                Either::Left(done) => affected += done.rows_affected(),
            }
        }
    }
    Ok(Ok(shape(Engine::Mysql, kind, affected, rows)))
}
