//! The narrow way for the pollers and the reconciles to ask for a reconcile: a QWorker's or a
//! ScalerConfig's. Cheap to clone; a closed controller is ignored (the operator is stopping).

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::ObjectRef;
use qscaler_crds::{QWorker, ScalerConfig};

use crate::object_key::ObjectKey;

#[derive(Clone)]
pub(crate) struct Triggers {
    pub qworker: UnboundedSender<ObjectRef<QWorker>>,
    pub scaler: UnboundedSender<ObjectRef<ScalerConfig>>,
}

impl Triggers {
    pub fn qworker(&self, key: &ObjectKey) {
        let _ = self
            .qworker
            .unbounded_send(ObjectRef::new(&key.name).within(&key.namespace));
    }

    pub fn scaler(&self, key: &ObjectKey) {
        let _ = self
            .scaler
            .unbounded_send(ObjectRef::new(&key.name).within(&key.namespace));
    }
}
