//! What wxrules tells its operators: log lines (`logline` formats each `tracing` event,
//! `logsink` writes them in batches, `limit` bounds the lines a client can cause), Prometheus metrics (`metrics`), and the dashboard's
//! ring of recent pushes (`recent`). Nothing here decides how a push is answered.

pub mod limit;
pub mod logline;
pub mod logsink;
pub mod metrics;
pub mod recent;
