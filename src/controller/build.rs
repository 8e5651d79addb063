//! Build: the children the store wants (`render::build_children`, pure) and where the operator finds its
//! Redis, from the validated spec, what the dereference stage read and the engine's script files
//! (`sale_bridge::script_files`).

use super::dereference::Inputs;
use super::sale_bridge::script_files;
use super::{Config, RedisTarget};
use crate::render::acl::Role;
use crate::render::{self, BuildInputs, Children, ValidatedStore};

pub(super) fn build(config: &Config, validated: &ValidatedStore, inputs: &Inputs) -> (Children, RedisTarget) {
    let build_inputs = BuildInputs {
        redis_password: inputs.redis_password.value.clone(),
        grafana_admin_password: inputs.grafana_admin_password.clone(),
        credentials: inputs.credentials.clone(),
        operator_image: config.operator_image.clone(),
        operator_pods: config.operator_pods.clone(),
        scripts: script_files(validated),
    };
    let target = RedisTarget {
        address: config.redis_address(validated),
        username: Some(Role::Operator.user().into()),
        password: inputs.credentials.password(Role::Operator).into(),
        admin_password: inputs.redis_password.value.clone(),
    };
    (render::build_children(validated, &build_inputs), target)
}
