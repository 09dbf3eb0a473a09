//! The server's side of plugins: registering them, handing them their messages, and routing
//! what they send to the right connections and document slots.

use std::any::Any;

use super::Server;
use crate::auth::Permission;
use crate::plugin::{PluginError, Recipients, ServerPlugin, ServerPluginMessage};
use crate::store::DocumentStore;
use crate::wire::{DocSlot, ErrorCode, Message};
use crate::{ConnectionId, PluginId, ProtocolError, ServerEvent};

impl<S: DocumentStore> Server<S> {
    /// Add a plugin, replacing (and returning) one with the same id. A plugin added while
    /// clients are connected is told about them and their subscriptions.
    pub fn add_plugin(&mut self, plugin: impl ServerPlugin) -> Option<Box<dyn ServerPlugin>> {
        let mut plugin: Box<dyn ServerPlugin> = Box::new(plugin);
        if let Some(now) = self.last_now {
            for (id, conn) in &self.connections {
                let Some(peer) = conn.peer else { continue };
                plugin.on_connected(now, *id, peer);
                for sub in conn.subscriptions.values() {
                    plugin.on_subscribed(now, *id, peer, &sub.document);
                }
            }
        }
        match self.plugins.iter_mut().find(|p| p.id() == plugin.id()) {
            Some(old) => Some(std::mem::replace(old, plugin)),
            None => {
                self.plugins.push(plugin);
                None
            }
        }
    }

    /// The plugin of type `P`, for reading its state.
    pub fn plugin<P: ServerPlugin>(&self) -> Option<&P> {
        self.plugins.iter().find_map(|p| (&**p as &dyn Any).downcast_ref::<P>())
    }

    /// The plugin of type `P`, for commands; what it queues leaves at the next
    /// [`Server::poll_transmit`].
    pub fn plugin_mut<P: ServerPlugin>(&mut self) -> Option<&mut P> {
        self.plugins.iter_mut().find_map(|p| (&mut **p as &mut dyn Any).downcast_mut::<P>())
    }

    pub(super) fn on_plugin_message(
        &mut self,
        id: ConnectionId,
        plugin: PluginId,
        slot: Option<DocSlot>,
        body: &[u8],
    ) {
        let Some(conn) = self.connections.get_mut(&id) else { return };
        let Some(peer) = conn.peer else { return };
        let document = match slot {
            None => None,
            Some(slot) => match conn.subscriptions.get(&slot) {
                // Presence and every other plugin message about a document is a write: a
                // reader's reaches no one.
                Some(sub) if sub.permission != Permission::ReadWrite => {
                    let document = sub.document.clone();
                    return self.refuse_read_only(id, slot, document, "plugin messages");
                }
                Some(sub) => Some(sub.document.clone()),
                None => {
                    conn.outbox.push(Message::Error {
                        doc: Some(slot),
                        code: ErrorCode::UnknownDocument,
                        detail: "plugin message for a slot that is not subscribed".into(),
                    });
                    return;
                }
            },
        };
        let Some(target) = self.plugins.iter_mut().find(|p| p.id() == plugin) else {
            conn.outbox.push(Message::Error {
                doc: slot,
                code: ErrorCode::UnknownPlugin,
                detail: format!("no plugin {} on this server", plugin.0),
            });
            return;
        };
        let now = self.last_now.unwrap_or(conn.last_heard);
        if let Err(error) = target.on_message(now, id, peer, document.as_ref(), body) {
            let code = match error {
                PluginError::Malformed(_) => ErrorCode::Malformed,
                _ => ErrorCode::PluginRefused,
            };
            conn.outbox.push(Message::Error { doc: slot, code, detail: error.to_string() });
            self.events.push_back(ServerEvent::Error {
                connection: id,
                error: ProtocolError::Plugin { plugin, error },
            });
        }
    }

    /// Move what the plugins queued into the connections' outboxes, so that it leaves with
    /// this poll's frames.
    pub(super) fn route_plugin_messages(&mut self) {
        for plugin in &mut self.plugins {
            let id = plugin.id();
            while let Some(message) = plugin.poll_message() {
                let ServerPluginMessage { to, document, body } = message;
                let deliver = |conn: &mut super::Connection, body: Vec<u8>| {
                    let slot = match &document {
                        None => None,
                        Some(name) => match conn.subscriptions.iter().find(|(_, s)| s.document == *name) {
                            Some((slot, _)) => Some(*slot),
                            None => return,
                        },
                    };
                    conn.outbox.push(Message::Plugin { plugin: id, doc: slot, body });
                };
                match to {
                    Recipients::Connection(target) => {
                        if let Some(conn) = self.connections.get_mut(&target).filter(|c| c.peer.is_some()) {
                            deliver(conn, body);
                        }
                    }
                    Recipients::Subscribers { except } => {
                        let Some(name) = &document else { continue };
                        let Some(subscribers) = self.subscribers.get(name) else { continue };
                        for (target, slot) in subscribers {
                            if Some(*target) == except {
                                continue;
                            }
                            if let Some(conn) = self.connections.get_mut(target) {
                                conn.outbox.push(Message::Plugin {
                                    plugin: id,
                                    doc: Some(*slot),
                                    body: body.clone(),
                                });
                            }
                        }
                    }
                    Recipients::Everyone { except } => {
                        for (target, conn) in &mut self.connections {
                            if Some(*target) != except && conn.peer.is_some() {
                                deliver(conn, body.clone());
                            }
                        }
                    }
                }
            }
        }
    }
}
