use super::Error;

#[test]
fn kinds_lists_every_kind() {
    let all = [
        Error::Config(String::new()),
        Error::BadRequest(String::new()),
        Error::NoConnection(String::new()),
        Error::ConnectionLost(String::new()),
        Error::Timeout(String::new()),
        Error::NoAvailableWorkers,
        Error::WorkerWaitTimeout,
        Error::PoolStopped,
        Error::Connect(String::new()),
        Error::Server(String::new()),
        Error::Internal(String::new()),
    ];
    let kinds: Vec<&str> = all.iter().map(Error::kind).collect();
    assert_eq!(kinds, Error::KINDS);
}
