//! The topics service (see `forum::entity`). `STORE`: host:port of its datastore.
fn main() {
    forum::service::run("topics", || {
        let topics = forum::entity::Entity {
            collection: "topics",
            field: "title",
            store: forum::store::Store {
                authority: forum::service::required_env("STORE"),
            },
        };
        move |r| topics.handle(r)
    });
}
