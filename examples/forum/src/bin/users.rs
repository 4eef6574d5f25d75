//! The users service (see `forum::entity`). `STORE`: host:port of its datastore.
fn main() {
    forum::service::run("users", || {
        let users = forum::entity::Entity {
            collection: "users",
            field: "name",
            store: forum::store::Store {
                authority: forum::service::required_env("STORE"),
            },
        };
        move |r| users.handle(r)
    });
}
