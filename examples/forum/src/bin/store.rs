//! A forum datastore (see `forum::store`): each service runs one of its own.
fn main() {
    forum::service::run("store", || {
        let c = forum::store::Collections::default();
        move |r| c.handle(r)
    });
}
