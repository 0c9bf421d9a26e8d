//! Every acknowledged Set waited for a commit (sled flush + fdatasync), and
//! concurrent Sets share commits (group commit), counted by the store itself
//! on the real sled store in a temporary directory. Writers alternate
//! between the resources: every resource's writes take the same path.

use settingsd::{
    domain::{AccountSid, FriendlyName, SettingsPatch},
    resource::Resource,
    store::{
        sled::{SledStore, StoreOptions, SyncMode},
        Store,
    },
};

fn account(i: usize) -> AccountSid {
    AccountSid::parse(&format!("AC{i:032x}")).unwrap()
}

fn patch(i: usize) -> SettingsPatch {
    SettingsPatch::new(FriendlyName::parse(&format!("set {i}")).unwrap())
}

/// Writer `w`'s resource: the writers alternate between every resource.
fn resource(w: usize) -> Resource {
    Resource::ALL[w % Resource::ALL.len()]
}

/// Runs `writers` tasks of `each` Sets at once and returns the commits they took.
async fn commits_for(store: &SledStore, writers: usize, each: usize) -> u64 {
    let before = store.syncs();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..each {
                    store
                        .set(resource(w), &account(w), patch(i).into(), None)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    store.syncs() - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_writer_pays_one_commit_per_set_and_concurrent_writers_share_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&StoreOptions::new(dir.path())).unwrap();

    // One after another, each Set's answer must wait for its own commit.
    let sequential = commits_for(&store, 1, 50).await;
    let concurrent = commits_for(&store, 64, 10).await;
    store.close().await.unwrap();

    assert!(
        sequential >= 50,
        "50 acknowledged Sets after {sequential} commits"
    );
    assert!(
        concurrent < 640,
        "64 concurrent writers should share commits: {concurrent} for 640 Sets"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_per_write_pays_one_commit_per_set_even_when_concurrent() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&StoreOptions {
        sync_mode: SyncMode::PerWrite,
        ..StoreOptions::new(dir.path())
    })
    .unwrap();

    let concurrent = commits_for(&store, 16, 5).await;
    store.close().await.unwrap();

    assert!(concurrent >= 80, "80 Sets after {concurrent} commits");
}
