"""The CloudFormation template of a cloud order: one EC2 instance that runs the delivered edge stack.

The instance fetches its bundle (``edge_bundle.BUNDLE_FILES``) from S3 with its own role, so the
template stays the same size whatever the DTM holds, and carries no secret and no customer text
in UserData: the site name only appears in the Description and Metadata, where YAML quoting
contains it and no shell ever sees it. The template does carry each bundle file's sha256, and the
instance checks what it fetched against them before it starts anything.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from troposphere import (
    AWSHelperFn,
    Base64,
    Equals,
    GetAtt,
    If,
    Output,
    Parameter,
    Ref,
    Sub,
    Tags,
    Template,
)
from troposphere.ec2 import (
    EBSBlockDevice,
    IamInstanceProfile,
    Instance,
    LaunchTemplate,
    LaunchTemplateBlockDeviceMapping,
    LaunchTemplateData,
    LaunchTemplateSpecification,
    MetadataOptions,
    NetworkInterfaces,
    SecurityGroup,
    SecurityGroupRule,
    TagSpecifications,
)
from troposphere.iam import InstanceProfile, Policy, Role
from troposphere.policies import CreationPolicy, ResourceSignal

from contracts.configurator import CloudDeployment, ConfiguratorPayload
from contracts.s3_layout import is_bucket_name, is_cfg_id
from delivery.edge_bundle import BUNDLE_FILES, HMI_PORT, SECRETS_NAME, STACK_DIR

TEMPLATE_FORMAT_VERSION = "2010-09-09"
INSTANCE_LOGICAL_ID = "EdgeInstance"
PUBLIC_IP_CONDITION = "UsePublicIp"
SIGNAL_TIMEOUT = "PT20M"
# Pinned so every stack runs the compose release the bundle was tested with.
COMPOSE_VERSION = "v2.29.7"
ROOT_VOLUME_GIB = 30

AL2023_AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{arch}"
# Graviton families carry a "g" right after the generation digit (t4g, m7gd, c7gn, is4gen) or are a1.
_ARM_FAMILY = re.compile(r"^(a1|[a-z]+\d+g[a-z-]*)$")

# Plain dotted-quad CIDR; prefixes shorter than /8 are refused because the HMI speaks plain HTTP
# and must not be opened to the whole internet by a slip of the finger.
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
ALLOWED_CIDR_PATTERN = rf"^({_OCTET}\.){{3}}{_OCTET}/([89]|[12][0-9]|3[0-2])$"

# These values are substituted into the UserData shell script and IAM ARNs, so they are held to
# alphabets that can neither break quoting nor reach outside the order's prefix.
_BUNDLE_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_.-]+)*/$")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

# Fn::Sub reads "${...}" as its own variables, so the script spells shell variables as "$name".
USER_DATA = """#!/bin/bash
# EMS edge stack bootstrap, order ${CfgId}: fetches the bundle with the instance role and starts it.
set -euo pipefail
trap '/opt/aws/bin/cfn-signal --exit-code $? --stack ${AWS::StackName} --resource ${SignalResource} --region ${AWS::Region}' EXIT

dnf install -y docker aws-cfn-bootstrap
systemctl enable --now docker.service

arch=$(uname -m)
plugins=/usr/local/lib/docker/cli-plugins
release=https://github.com/docker/compose/releases/download/${ComposeVersion}
install -d -m 0755 $plugins
curl -fsSL --retry 5 -o /tmp/docker-compose $release/docker-compose-linux-$arch
curl -fsSL --retry 5 -o /tmp/docker-compose.sha256 $release/docker-compose-linux-$arch.sha256
echo "$(cut -d ' ' -f 1 /tmp/docker-compose.sha256)  /tmp/docker-compose" | sha256sum --check --strict -
install -m 0755 /tmp/docker-compose $plugins/docker-compose
docker compose version

install -d -m 0755 ${StackDir}
for name in ${BundleFiles}; do
  aws s3 cp --only-show-errors s3://${BundleBucket}/${BundlePrefix}$name ${StackDir}/$name
done
chmod 0600 ${StackDir}/${SecretsFile}
cd ${StackDir}

# Nothing of the bundle runs unless each file is the one the order built: a file changed in S3 since
# then stops the boot here, and the EXIT trap reports the failure to CloudFormation.
cat > SHA256SUMS <<'EOF'
${BundleSha256Sums}
EOF
mismatched=""
while read -r digest name; do
  echo "$digest  $name" | sha256sum --check --strict --status - || mismatched="$mismatched $name"
done < SHA256SUMS
if [ -n "$mismatched" ]; then
  echo "EMS bundle check failed, the stack is not started: sha256 differs from the template for:$mismatched" >&2
  exit 1
fi

docker compose up -d --wait --wait-timeout 600
"""


def _plain_text(text: str) -> str:
    """Customer text as CloudFormation shows it: one line, no control characters, no "${".

    cfn-lint reads any "${...}" outside Fn::Sub as a forgotten substitution (E1029), so a site name
    must not be able to spell one.
    """
    printable = "".join(char if unicodedata.category(char) != "Cc" else " " for char in text)
    return " ".join(printable.split()).replace("${", "$ {")


def _ami_parameter_path(instance_type: str) -> str:
    family = instance_type.split(".", 1)[0]
    return AL2023_AMI_PARAMETER.format(arch="arm64" if _ARM_FAMILY.match(family) else "x86_64")


def _check_inputs(cfg_id: str, bucket: str, bundle_prefix: str) -> None:
    if not is_cfg_id(cfg_id):
        raise ValueError(f"cfg_id {cfg_id!r} is not a valid order id")
    if not is_bucket_name(bucket):
        raise ValueError(f"bucket {bucket!r} is not a valid S3 bucket name")
    if not _BUNDLE_PREFIX.fullmatch(bundle_prefix) or ".." in bundle_prefix.split("/"):
        raise ValueError(f"bundle_prefix {bundle_prefix!r} must be a relative key prefix ending in '/'")


def _check_bundle_sha256(bundle_sha256: Mapping[str, str]) -> None:
    missing = [name for name in BUNDLE_FILES if name not in bundle_sha256]
    if missing:
        raise ValueError(f"bundle_sha256 lacks the sha256 of {', '.join(missing)}")
    unknown = sorted(str(name) for name in bundle_sha256 if name not in BUNDLE_FILES)
    if unknown:
        raise ValueError(f"bundle_sha256 names {', '.join(unknown)}, which the instance does not fetch")
    for name in BUNDLE_FILES:
        digest = bundle_sha256[name]
        # The digests land in the UserData script, so nothing but lowercase hex may pass.
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
            raise ValueError(f"bundle_sha256 of {name}: {digest!r} is not a lowercase hex sha256")


def _sha256sums(bundle_sha256: Mapping[str, str]) -> str:
    """The digests in ``sha256sum`` format, in the order the instance fetches the files."""
    return "\n".join(f"{bundle_sha256[name]}  {name}" for name in BUNDLE_FILES)


def _user_data(
    *, cfg_id: str, bucket: str, bundle_prefix: str, bundle_sha256: Mapping[str, str]
) -> AWSHelperFn:
    return Base64(
        Sub(
            USER_DATA,
            CfgId=cfg_id,
            SignalResource=INSTANCE_LOGICAL_ID,
            ComposeVersion=COMPOSE_VERSION,
            StackDir=STACK_DIR,
            BundleFiles=" ".join(BUNDLE_FILES),
            SecretsFile=SECRETS_NAME,
            BundleBucket=bucket,
            BundlePrefix=bundle_prefix,
            BundleSha256Sums=_sha256sums(bundle_sha256),
        )
    )


@dataclass(frozen=True)
class _StackParameters:
    """The parameters the person deploying the stack may set, as the resources refer to them."""

    vpc_id: Parameter
    subnet_id: Parameter
    instance_type: Parameter
    allowed_cidr: Parameter
    associate_public_ip: Parameter
    latest_ami_id: Parameter

    def in_order(self) -> list[Parameter]:
        """The parameters in the order of the fields, which is the order the template lists them in."""
        return [getattr(self, field.name) for field in fields(self)]


def _cloud_deployment(cfg_id: str, order: ConfiguratorPayload) -> CloudDeployment:
    deployment = order.deployment
    if not isinstance(deployment, CloudDeployment):
        raise ValueError(
            f"order {cfg_id} targets {deployment.target!r}; a CloudFormation template is for cloud orders"
        )
    return deployment


def _metadata(
    *, cfg_id: str, order: ConfiguratorPayload, site_name: str, region: str, bucket: str, bundle_prefix: str
) -> dict[str, Any]:
    return {
        "Ems": {
            "CfgId": cfg_id,
            "Site": {"Name": site_name, "Timezone": order.site.timezone},
            "Region": region,
            "Bundle": {"Bucket": bucket, "Prefix": bundle_prefix, "Files": list(BUNDLE_FILES)},
        },
        "AWS::CloudFormation::Interface": {
            "ParameterGroups": [
                {
                    "Label": {"default": "Network"},
                    "Parameters": ["VpcId", "SubnetId", "AssociatePublicIp", "AllowedCidr"],
                },
                {"Label": {"default": "Instance"}, "Parameters": ["InstanceType", "LatestAmiId"]},
            ]
        },
    }


def _add_parameters(template: Template, deployment: CloudDeployment) -> _StackParameters:
    parameters = _StackParameters(
        vpc_id=Parameter("VpcId", Type="AWS::EC2::VPC::Id", Description="VPC the edge instance runs in."),
        subnet_id=Parameter(
            "SubnetId",
            Type="AWS::EC2::Subnet::Id",
            Description="Subnet of the edge instance; it needs outbound access to S3, packages and the image registry.",
        ),
        instance_type=Parameter(
            "InstanceType",
            Type="String",
            Default=deployment.instance_size,
            Description="EC2 instance type; the default is the size the order chose.",
        ),
        allowed_cidr=Parameter(
            "AllowedCidr",
            Type="String",
            AllowedPattern=ALLOWED_CIDR_PATTERN,
            ConstraintDescription="an IPv4 CIDR such as 203.0.113.0/24, with a prefix length of 8 to 32",
            Description=f"Only this network may reach the HMI on port {HMI_PORT}.",
        ),
        associate_public_ip=Parameter(
            "AssociatePublicIp",
            Type="String",
            AllowedValues=["true", "false"],
            Default="true",
            Description="Give the instance a public IPv4 address; false for subnets reached over a VPN.",
        ),
        latest_ami_id=Parameter(
            "LatestAmiId",
            Type="AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
            Default=_ami_parameter_path(deployment.instance_size),
            Description="Amazon Linux 2023 image; the default follows the architecture of the ordered instance size.",
        ),
    )
    template.add_parameter(parameters.in_order())
    return parameters


def _add_instance_profile(
    template: Template, *, bucket: str, bundle_prefix: str, tags: Tags
) -> InstanceProfile:
    """The instance's role: Session Manager, and reading the order's bundle and nothing else."""
    role = template.add_resource(
        Role(
            "EdgeInstanceRole",
            AssumeRolePolicyDocument={
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "ec2.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            },
            # Session Manager replaces SSH: no key pair, no port 22.
            ManagedPolicyArns=[Sub("arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore")],
            Policies=[
                Policy(
                    PolicyName="ReadOrderBundle",
                    PolicyDocument={
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Action": "s3:GetObject",
                                "Resource": Sub(f"arn:${{AWS::Partition}}:s3:::{bucket}/{bundle_prefix}*"),
                            }
                        ],
                    },
                )
            ],
            Tags=tags,
        )
    )
    return template.add_resource(InstanceProfile("EdgeInstanceProfile", Roles=[Ref(role)]))


def _add_security_group(
    template: Template, *, cfg_id: str, parameters: _StackParameters, tags: Tags
) -> SecurityGroup:
    return template.add_resource(
        SecurityGroup(
            "EdgeSecurityGroup",
            GroupDescription=f"EMS edge HMI of order {cfg_id}",
            VpcId=Ref(parameters.vpc_id),
            SecurityGroupIngress=[
                SecurityGroupRule(
                    IpProtocol="tcp",
                    FromPort=HMI_PORT,
                    ToPort=HMI_PORT,
                    CidrIp=Ref(parameters.allowed_cidr),
                    Description="EMS HMI",
                )
            ],
            Tags=tags,
        )
    )


def _add_launch_template(
    template: Template,
    *,
    parameters: _StackParameters,
    profile: InstanceProfile,
    security_group: SecurityGroup,
    tags: Tags,
    user_data: AWSHelperFn,
) -> LaunchTemplate:
    return template.add_resource(
        LaunchTemplate(
            "EdgeLaunchTemplate",
            LaunchTemplateData=LaunchTemplateData(
                ImageId=Ref(parameters.latest_ami_id),
                InstanceType=Ref(parameters.instance_type),
                IamInstanceProfile=IamInstanceProfile(Arn=GetAtt(profile, "Arn")),
                # Hop limit 1 keeps the instance role out of reach of the containers.
                MetadataOptions=MetadataOptions(
                    HttpEndpoint="enabled",
                    HttpTokens="required",
                    HttpPutResponseHopLimit=1,
                ),
                NetworkInterfaces=[
                    NetworkInterfaces(
                        DeviceIndex=0,
                        SubnetId=Ref(parameters.subnet_id),
                        Groups=[Ref(security_group)],
                        AssociatePublicIpAddress=Ref(parameters.associate_public_ip),
                        DeleteOnTermination=True,
                    )
                ],
                BlockDeviceMappings=[
                    LaunchTemplateBlockDeviceMapping(
                        DeviceName="/dev/xvda",
                        Ebs=EBSBlockDevice(
                            VolumeType="gp3",
                            VolumeSize=ROOT_VOLUME_GIB,
                            Encrypted=True,
                            DeleteOnTermination=True,
                        ),
                    )
                ],
                TagSpecifications=[
                    TagSpecifications(ResourceType="instance", Tags=tags),
                    TagSpecifications(ResourceType="volume", Tags=tags),
                ],
                UserData=user_data,
            ),
        )
    )


def _add_instance(template: Template, launch_template: LaunchTemplate) -> Instance:
    return template.add_resource(
        Instance(
            INSTANCE_LOGICAL_ID,
            LaunchTemplate=LaunchTemplateSpecification(
                LaunchTemplateId=Ref(launch_template),
                Version=GetAtt(launch_template, "LatestVersionNumber"),
            ),
            CreationPolicy=CreationPolicy(ResourceSignal=ResourceSignal(Count=1, Timeout=SIGNAL_TIMEOUT)),
        )
    )


def _add_outputs(template: Template, instance: Instance) -> None:
    template.add_output(
        [
            Output("InstanceId", Description="The edge instance.", Value=Ref(instance)),
            Output(
                "HmiUrl",
                Description="The HMI of the edge stack.",
                Value=Sub(
                    f"http://${{HmiAddress}}:{HMI_PORT}",
                    HmiAddress=If(
                        PUBLIC_IP_CONDITION, GetAtt(instance, "PublicIp"), GetAtt(instance, "PrivateIp")
                    ),
                ),
            ),
        ]
    )


def compose_cfn_template(
    *,
    cfg_id: str,
    order: ConfiguratorPayload,
    bucket: str,
    bundle_prefix: str,
    bundle_sha256: Mapping[str, str],
) -> bytes:
    """The order's CloudFormation template as YAML; the same inputs always give the same bytes.

    ``bundle_sha256`` holds the lowercase hex sha256 of each bundle file (``BUNDLE_FILES``) as
    stored: the instance refuses to start a bundle whose files differ from it.
    """
    deployment = _cloud_deployment(cfg_id, order)
    _check_inputs(cfg_id, bucket, bundle_prefix)
    _check_bundle_sha256(bundle_sha256)

    site_name = _plain_text(order.site.name)
    template = Template(Description=f"EMS edge stack for order {cfg_id}, site {site_name}")
    template.set_version(TEMPLATE_FORMAT_VERSION)
    template.set_metadata(
        _metadata(
            cfg_id=cfg_id,
            order=order,
            site_name=site_name,
            region=deployment.region,
            bucket=bucket,
            bundle_prefix=bundle_prefix,
        )
    )
    parameters = _add_parameters(template, deployment)
    template.add_condition(PUBLIC_IP_CONDITION, Equals(Ref(parameters.associate_public_ip), "true"))

    tags = Tags(Name=f"ems-edge-{cfg_id}", **{"ems:cfg-id": cfg_id})
    profile = _add_instance_profile(template, bucket=bucket, bundle_prefix=bundle_prefix, tags=tags)
    security_group = _add_security_group(template, cfg_id=cfg_id, parameters=parameters, tags=tags)
    launch_template = _add_launch_template(
        template,
        parameters=parameters,
        profile=profile,
        security_group=security_group,
        tags=tags,
        user_data=_user_data(
            cfg_id=cfg_id, bucket=bucket, bundle_prefix=bundle_prefix, bundle_sha256=bundle_sha256
        ),
    )
    instance = _add_instance(template, launch_template)
    _add_outputs(template, instance)
    return template.to_yaml().encode("utf-8")
