//! settingsd front ends on a real etcd cluster (`serve --store etcd`): two
//! front ends serve the same data, watches see writes made through the other
//! front end, and concurrent writers through both lose no update.

use crate::{etcd_cluster::{etcd_available, EtcdCluster}, helpers::*};
