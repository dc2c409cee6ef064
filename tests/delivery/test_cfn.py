import base64
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint
from cfnlint.decode.decode import decode_str

from contracts.configurator import ConfiguratorPayload
from delivery.cfn import ALLOWED_CIDR_PATTERN, compose_cfn_template
from delivery.edge_bundle import BUNDLE_FILES
from tests.delivery.conftest import order_data, site_named

CFG_ID = "5f0c7a52-8d1e-4c3b-9a6f-2e1d0b9c8a71"
BUCKET = "platform-artifacts-beta"
PREFIX = f"orders/{CFG_ID}/bundle/"
BUNDLE_SHA256 = {name: hashlib.sha256(f"stored {name}".encode()).hexdigest() for name in BUNDLE_FILES}
# The longest values CloudFormation can substitute for the pseudo parameters in UserData.
PSEUDO_PARAMETERS = {
    "AWS::StackName": "s" * 128,
    "AWS::Region": "ap-southeast-4",
    "AWS::Partition": "aws-us-gov",
}
USER_DATA_LIMIT = 16 * 1024
SECRET_LOOKING = re.compile(
    r"AKIA[0-9A-Z]{16}|aws_secret_access_key|password|passwd|secret|BEGIN [A-Z ]*PRIVATE KEY|api[_-]?key|bearer",
    re.IGNORECASE,
)


def make_order(
    devices: int = 3, region: str = "eu-central-1", size: str = "t3.medium", site: str = "Plant Nord"
) -> ConfiguratorPayload:
    return ConfiguratorPayload.model_validate(
        order_data(
            deployment={"target": "cloud", "region": region, "instance_size": size},
            site=site_named(site),
            devices=[
                {
                    "id": f"dev-{index}",
                    "type": "power_meter",
                    "model": "PM5560",
                    "connection": {
                        "protocol": "modbus_tcp",
                        "host": f"10.20.{index // 250}.{index % 250 + 1}",
                    },
                }
                for index in range(devices)
            ],
        )
    )


def render(
    order: ConfiguratorPayload, cfg_id: str = CFG_ID, bundle_sha256: Mapping[str, str] = BUNDLE_SHA256
) -> str:
    return compose_cfn_template(
        cfg_id=cfg_id, order=order, bucket=BUCKET, bundle_prefix=PREFIX, bundle_sha256=bundle_sha256
    ).decode("utf-8")


def parse(text: str) -> dict[str, Any]:
    template, errors = decode_str(text)
    assert not errors and template is not None
    return template


def walk(node: Any) -> Iterator[tuple[Any, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def user_data_script(template: dict[str, Any], overrides: Mapping[str, str] | None = None) -> str:
    """The UserData shell script as the instance receives it, pseudo parameters at their longest.

    ``overrides`` replaces substituted values, e.g. the stack directory for a run in a temp dir.
    """
    user_data = template["Resources"]["EdgeLaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"]
    script, variables = user_data["Fn::Base64"]["Fn::Sub"]
    values = {**PSEUDO_PARAMETERS, **variables, **(overrides or {})}
    unresolved = set(re.findall(r"\$\{([^}!]+)\}", script)) - set(values)
    assert not unresolved, f"UserData names undefined variables {unresolved}"
    return re.sub(r"\$\{([^}!]+)\}", lambda match: values[match.group(1)], script)


@pytest.mark.parametrize(
    "order",
    [
        make_order(devices=3),
        make_order(devices=500, region="us-east-1", size="m7g.large"),
        make_order(devices=0),
    ],
    ids=["small", "500-devices", "no-devices"],
)
def test_template_is_lint_clean(order: ConfiguratorPayload) -> None:
    matches = lint(render(order), config=ManualArgs(regions=[order.deployment.region], include_checks=["I"]))
    assert [str(match) for match in matches] == []


def test_template_with_hostile_site_name_is_lint_clean_and_quoted() -> None:
    site = "Werk \"Süd\": #1 ${AWS::Region} 'x'\n- !Ref evil &a *b `id` $(reboot)"
    text = render(make_order(site=site))

    assert [str(match) for match in lint(text, config=ManualArgs(regions=["eu-central-1"]))] == []
    template = parse(text)
    assert template["Description"].startswith(f'EMS edge stack for order {CFG_ID}, site Werk "Süd": #1')
    assert "Werk" not in user_data_script(template)


def test_site_name_and_cfg_id_are_named_in_description_and_metadata() -> None:
    template = parse(render(make_order()))
    assert template["Description"] == f"EMS edge stack for order {CFG_ID}, site Plant Nord"
    assert template["Metadata"]["Ems"]["CfgId"] == CFG_ID
    assert template["Metadata"]["Ems"]["Site"] == {"Name": "Plant Nord", "Timezone": "Europe/Berlin"}


def test_user_data_is_small_secret_free_and_fetches_the_bundle() -> None:
    script = user_data_script(parse(render(make_order(devices=500))))

    assert len(script.encode()) < USER_DATA_LIMIT
    assert len(base64.b64encode(script.encode())) < USER_DATA_LIMIT
    # The script names the bundle's secrets.env (it fetches it and makes it root's alone), no value.
    assert not SECRET_LOOKING.search(script.replace("secrets.env", "<bundle file>"))
    assert "COMMISSIONING_TOKEN" not in script
    assert "Plant Nord" not in script and "ada@example.com" not in script
    for name in ("cfg.customer.yml", "dtm.json", "compose.yaml", "secrets.env"):
        assert name in script
    assert "chmod 0600 /opt/ems/secrets.env" in script
    assert f"aws s3 cp --only-show-errors s3://{BUCKET}/{PREFIX}$name /opt/ems/$name" in script
    assert "docker compose up -d" in script
    assert "/opt/aws/bin/cfn-signal --exit-code $?" in script
    assert "dnf install -y docker" in script


def test_user_data_does_not_grow_with_the_dtm() -> None:
    small = user_data_script(parse(render(make_order(devices=0))))
    large = user_data_script(parse(render(make_order(devices=500))))
    assert small == large


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is needed to syntax-check UserData")
def test_user_data_is_valid_bash() -> None:
    script = user_data_script(parse(render(make_order())))
    subprocess.run(["bash", "-n"], input=script.encode(), check=True)


def test_instance_requires_imdsv2_and_signals_creation() -> None:
    resources = parse(render(make_order()))["Resources"]
    data = resources["EdgeLaunchTemplate"]["Properties"]["LaunchTemplateData"]

    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpEndpoint"] == "enabled"
    assert data["InstanceType"] == {"Ref": "InstanceType"}
    assert data["ImageId"] == {"Ref": "LatestAmiId"}
    instance = resources["EdgeInstance"]
    assert instance["Type"] == "AWS::EC2::Instance"
    assert instance["Properties"]["LaunchTemplate"]["LaunchTemplateId"] == {"Ref": "EdgeLaunchTemplate"}
    assert instance["CreationPolicy"]["ResourceSignal"] == {"Count": 1, "Timeout": "PT20M"}


def test_no_ssh_anywhere() -> None:
    template = parse(render(make_order()))
    for key, value in walk(template):
        assert key != "KeyName"
        if key in ("FromPort", "ToPort"):
            assert value != 22
    ingress = [
        rule
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::EC2::SecurityGroup"
        for rule in resource["Properties"].get("SecurityGroupIngress", [])
    ]
    assert ingress == [
        {
            "IpProtocol": "tcp",
            "FromPort": 8080,
            "ToPort": 8080,
            "CidrIp": {"Ref": "AllowedCidr"},
            "Description": "EMS HMI",
        }
    ]
    assert not [r for r in template["Resources"].values() if r["Type"] == "AWS::EC2::SecurityGroupIngress"]


def test_instance_role_reads_only_the_bundle_prefix() -> None:
    resources = parse(render(make_order()))["Resources"]
    role = resources["EdgeInstanceRole"]["Properties"]

    assert role["ManagedPolicyArns"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"}
    ]
    statements = [
        statement for policy in role["Policies"] for statement in policy["PolicyDocument"]["Statement"]
    ]
    assert statements == [
        {
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": {"Fn::Sub": f"arn:${{AWS::Partition}}:s3:::{BUCKET}/{PREFIX}*"},
        }
    ]
    profile = resources["EdgeInstanceProfile"]["Properties"]
    assert profile["Roles"] == [{"Ref": "EdgeInstanceRole"}]


def test_parameters() -> None:
    parameters = parse(render(make_order(size="c6i.xlarge")))["Parameters"]

    assert parameters["VpcId"]["Type"] == "AWS::EC2::VPC::Id"
    assert parameters["SubnetId"]["Type"] == "AWS::EC2::Subnet::Id"
    assert parameters["InstanceType"]["Default"] == "c6i.xlarge"
    assert parameters["LatestAmiId"] == {
        "Type": "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
        "Default": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
        "Description": parameters["LatestAmiId"]["Description"],
    }
    assert "Default" not in parameters["AllowedCidr"]
    assert parameters["AllowedCidr"]["AllowedPattern"] == ALLOWED_CIDR_PATTERN


def test_graviton_orders_default_to_the_arm64_image() -> None:
    for size in ("t4g.small", "m7g.large", "c7gn.xlarge", "a1.medium"):
        parameters = parse(render(make_order(size=size)))["Parameters"]
        assert parameters["LatestAmiId"]["Default"].endswith("-arm64"), size
    for size in ("t3.medium", "g4dn.xlarge", "c6in.large"):
        parameters = parse(render(make_order(size=size)))["Parameters"]
        assert parameters["LatestAmiId"]["Default"].endswith("-x86_64"), size


@pytest.mark.parametrize("cidr", ["10.0.0.0/16", "203.0.113.7/32", "192.168.0.0/24", "10.0.0.0/8"])
def test_allowed_cidr_pattern_accepts(cidr: str) -> None:
    assert re.fullmatch(ALLOWED_CIDR_PATTERN, cidr)


@pytest.mark.parametrize(
    "cidr", ["0.0.0.0/0", "10.0.0.0/7", "10.0.0.0", "300.1.1.1/24", "1.2.3.4/33", "::/0", ""]
)
def test_allowed_cidr_pattern_refuses(cidr: str) -> None:
    assert not re.fullmatch(ALLOWED_CIDR_PATTERN, cidr)


def test_outputs() -> None:
    outputs = parse(render(make_order()))["Outputs"]
    assert outputs["InstanceId"]["Value"] == {"Ref": "EdgeInstance"}
    url, variables = outputs["HmiUrl"]["Value"]["Fn::Sub"]
    assert url == "http://${HmiAddress}:8080"
    assert variables["HmiAddress"] == {
        "Fn::If": [
            "UsePublicIp",
            {"Fn::GetAtt": ["EdgeInstance", "PublicIp"]},
            {"Fn::GetAtt": ["EdgeInstance", "PrivateIp"]},
        ]
    }


def test_same_inputs_give_identical_bytes() -> None:
    assert render(make_order()) == render(make_order())
    assert render(make_order()) != render(make_order(), cfg_id="6a1d8b63-9e2f-4d4c-8b7a-3f2e1c0d9b82")


def test_refuses_onprem_orders_and_unsafe_inputs() -> None:
    onprem = ConfiguratorPayload.model_validate(
        {**make_order().model_dump(mode="json"), "deployment": {"target": "onprem"}}
    )
    with pytest.raises(ValueError, match="cloud orders"):
        render(onprem)
    with pytest.raises(ValueError, match="bucket"):
        compose_cfn_template(
            cfg_id=CFG_ID,
            order=make_order(),
            bucket="Bad_Bucket",
            bundle_prefix=PREFIX,
            bundle_sha256=BUNDLE_SHA256,
        )
    for prefix in ("orders/x", "/orders/x/", "orders/../x/", "orders/$(id)/", PREFIX + "\n"):
        with pytest.raises(ValueError, match="bundle_prefix"):
            compose_cfn_template(
                cfg_id=CFG_ID,
                order=make_order(),
                bucket=BUCKET,
                bundle_prefix=prefix,
                bundle_sha256=BUNDLE_SHA256,
            )
    for cfg_id in ("x; rm -rf /", "abc\n"):
        with pytest.raises(ValueError, match="cfg_id"):
            render(make_order(), cfg_id=cfg_id)


def test_template_carries_the_sha256_of_each_fetched_file() -> None:
    script = user_data_script(parse(render(make_order())))

    for name in BUNDLE_FILES:
        assert f"{BUNDLE_SHA256[name]}  {name}\n" in script
    # The check sits between the fetch and the start of the stack.
    fetch = script.index("aws s3 cp")
    check = script.index("sha256sum --check --strict --status")
    assert fetch < check < script.index("docker compose up")


@pytest.mark.parametrize(
    ("digests", "named"),
    [
        ({name: digest for name, digest in BUNDLE_SHA256.items() if name != "dtm.json"}, "dtm.json"),
        ({**BUNDLE_SHA256, "extra.txt": BUNDLE_SHA256["dtm.json"]}, "extra.txt"),
        ({**BUNDLE_SHA256, "compose.yaml": BUNDLE_SHA256["compose.yaml"].upper()}, "compose.yaml"),
        ({**BUNDLE_SHA256, "secrets.env": BUNDLE_SHA256["secrets.env"][:-1]}, "secrets.env"),
        ({**BUNDLE_SHA256, "cfg.customer.yml": "0" * 63 + "\n"}, "cfg.customer.yml"),
        ({**BUNDLE_SHA256, "dtm.json": "$(reboot)" + "0" * 55}, "dtm.json"),
    ],
    ids=["missing", "unknown", "uppercase", "short", "newline", "shell"],
)
def test_refuses_a_bad_bundle_sha256_map(digests: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        render(make_order(), bundle_sha256=digests)


BUNDLE_CONTENT = {
    "cfg.customer.yml": b"site:\n  name: Plant Nord\n",
    "dtm.json": b'{"devices": []}',
    "compose.yaml": b"services:\n  gateway:\n    image: ems-edge-gateway:1\n",
    "secrets.env": b"COMMISSIONING_TOKEN=abc\n",
}
# Stand-ins for the commands the bundle part of the script calls, each recording its arguments.
STUBS = {
    # aws s3 cp [options] s3://bucket/prefix/name destination: S3 is the directory $S3_DIR.
    "aws": 'echo "aws $*" >> "$CALLS"\nsource="${@: -2:1}"\ncp "$S3_DIR/${source##*/}" "${@: -1}"\n',
    "docker": 'echo "docker $*" >> "$CALLS"\n',
    "cfn-signal": 'echo "cfn-signal $*" >> "$CALLS"\n',
}


def run_bundle_part(
    tmp_path: Path, stored: Mapping[str, bytes]
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run the UserData's shell options, EXIT trap and everything from the bundle fetch on.

    The template carries the sha256 of ``BUNDLE_CONTENT``; ``stored`` is what S3 holds at boot.
    """
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in BUNDLE_CONTENT.items()}
    stack_dir = tmp_path / "ems"
    script = user_data_script(
        parse(render(make_order(), bundle_sha256=digests)), overrides={"StackDir": str(stack_dir)}
    )
    lines = script.splitlines(keepends=True)
    trap = next(index for index, line in enumerate(lines) if line.startswith("trap "))
    fetch = lines.index(f"install -d -m 0755 {stack_dir}\n")
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for command, body in STUBS.items():
        (stubs / command).write_text(f"#!/bin/bash\n{body}")
        (stubs / command).chmod(0o755)
    part = "".join(lines[: trap + 1] + lines[fetch:]).replace(
        "/opt/aws/bin/cfn-signal", str(stubs / "cfn-signal")
    )
    s3_dir = tmp_path / "s3"
    s3_dir.mkdir()
    for name, data in stored.items():
        (s3_dir / name).write_bytes(data)
    calls = tmp_path / "calls"
    calls.touch()
    result = subprocess.run(
        ["bash", "-c", part],
        check=False,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}",
            "CALLS": str(calls),
            "S3_DIR": str(s3_dir),
        },
        timeout=60,
    )
    return result, calls.read_text().splitlines()


needs_shell_tools = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("sha256sum") is None,
    reason="bash and sha256sum are needed to run the UserData's bundle check",
)


@needs_shell_tools
def test_the_bundle_check_passes_the_built_files_and_the_stack_starts(tmp_path: Path) -> None:
    result, calls = run_bundle_part(tmp_path, BUNDLE_CONTENT)

    assert result.returncode == 0, result.stderr
    assert [call.split()[:2] for call in calls[:4]] == [["aws", "s3"]] * 4
    assert [call.rsplit("/", 1)[-1] for call in calls[:4]] == list(BUNDLE_FILES)
    assert calls[4] == "docker compose up -d --wait --wait-timeout 600"
    assert calls[5].startswith("cfn-signal --exit-code 0 ")
    assert len(calls) == 6
    assert (tmp_path / "ems" / "secrets.env").stat().st_mode & 0o777 == 0o600
    for name, data in BUNDLE_CONTENT.items():
        assert (tmp_path / "ems" / name).read_bytes() == data


@needs_shell_tools
def test_a_changed_file_stops_the_boot_before_the_stack_starts(tmp_path: Path) -> None:
    changed = {**BUNDLE_CONTENT, "compose.yaml": BUNDLE_CONTENT["compose.yaml"] + b"  evil:\n    image: x\n"}
    result, calls = run_bundle_part(tmp_path, changed)

    assert result.returncode != 0
    message = [line for line in result.stderr.splitlines() if "bundle check failed" in line]
    assert message == [
        "EMS bundle check failed, the stack is not started: sha256 differs from the template for: compose.yaml"
    ]
    assert not [call for call in calls if call.startswith("docker")]
    # The EXIT trap turns the failure into a FAILURE signal: the stack fails at once, not at the timeout.
    assert calls[-1].startswith(f"cfn-signal --exit-code {result.returncode} ")
