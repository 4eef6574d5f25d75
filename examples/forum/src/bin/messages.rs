//! The messages service (see `forum::messages`). `USERS`, `TOPICS`: host:port of the
//! users and topics services; `STORE`: host:port of its datastore.
fn main() {
    forum::service::run("messages", || {
        let messages = forum::messages::Messages {
            users: forum::service::required_env("USERS"),
            topics: forum::service::required_env("TOPICS"),
            store: forum::store::Store {
                authority: forum::service::required_env("STORE"),
            },
        };
        move |r| messages.handle(r)
    });
}
