//! One module per pool type, each a [`Driver`](crate::engine::pool::Driver)
//! for the engine; the table in `registry` says which type opens which.

pub mod cassandra;
pub mod elastic;
pub mod http;
pub mod http_client;
pub mod ldap;
pub mod rabbit;
pub mod rdbms;
pub mod redis;
pub mod riak;
pub mod tcp;
pub mod wire;
