# AWS IoT Core is the production MQTT broker. A topic rule forwards every meter message
# (MQTT topic meters/#) unchanged to the MSK topic var.kafka_topic through a VPC destination;
# the ingestion service validates it there exactly as it validates MQTT messages locally
# (bad messages go to the DLQ with the raw bytes). See docs/decisions/0601-*.md.
data "aws_partition" "current" {}

data "aws_iam_policy_document" "iot_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["iot.amazonaws.com"]
    }
  }
}

# Role of the VPC destination: IoT creates ENIs in the private subnets to reach the brokers.
resource "aws_iam_role" "destination" {
  name               = "${var.name}-iot-vpc-destination"
  assume_role_policy = data.aws_iam_policy_document.iot_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "destination" {
  statement {
    actions = [
      "ec2:CreateNetworkInterface",
      "ec2:DescribeNetworkInterfaces",
      "ec2:DescribeVpcs",
      "ec2:DeleteNetworkInterface",
      "ec2:DescribeSubnets",
      "ec2:DescribeVpcAttribute",
      "ec2:DescribeSecurityGroups",
    ]
    resources = ["*"]
  }
  statement {
    actions   = ["ec2:CreateNetworkInterfacePermission"]
    resources = ["arn:${data.aws_partition.current.partition}:ec2:*:*:network-interface/*"]
  }
}

resource "aws_iam_role_policy" "destination" {
  name   = "manage-enis"
  role   = aws_iam_role.destination.id
  policy = data.aws_iam_policy_document.destination.json
}

resource "aws_security_group" "rule" {
  name        = "${var.name}-iot-rule"
  description = "ENIs of the IoT rule destination: outbound to the MSK brokers only"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_egress_rule" "msk" {
  security_group_id = aws_security_group.rule.id
  description       = "Kafka SASL/SCRAM over TLS to the brokers"
  cidr_ipv4         = var.vpc_cidr_block
  ip_protocol       = "tcp"
  from_port         = 9096
  to_port           = 9096
}

resource "aws_iot_topic_rule_destination" "msk" {
  enabled = true
  vpc_configuration {
    role_arn        = aws_iam_role.destination.arn
    vpc_id          = var.vpc_id
    subnet_ids      = var.subnet_ids
    security_groups = [aws_security_group.rule.id]
  }
  depends_on = [aws_iam_role_policy.destination]
}

# Role of the rule itself: read the SCRAM credentials, write errors to CloudWatch Logs.
resource "aws_iam_role" "rule" {
  name               = "${var.name}-iot-meters-to-msk"
  assume_role_policy = data.aws_iam_policy_document.iot_assume.json
  tags               = var.tags
}

resource "aws_cloudwatch_log_group" "rule_errors" {
  name              = "/iot/${var.name}/meters-to-msk-errors"
  retention_in_days = 365
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

data "aws_iam_policy_document" "rule" {
  statement {
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [var.scram_secret_arn]
  }
  statement {
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
  }
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.rule_errors.arn}:*"]
  }
}

resource "aws_iam_role_policy" "rule" {
  name   = "read-scram-secret-write-errors"
  role   = aws_iam_role.rule.id
  policy = data.aws_iam_policy_document.rule.json
}

resource "aws_iot_topic_rule" "meters_to_msk" {
  name        = replace("${var.name}_meters_to_msk", "-", "_")
  description = "Forward meter readings (MQTT ${var.mqtt_topic_filter}) to MSK ${var.kafka_topic}"
  enabled     = true
  sql         = "SELECT * FROM '${var.mqtt_topic_filter}'"
  sql_version = "2016-03-23"

  kafka {
    destination_arn = aws_iot_topic_rule_destination.msk.arn
    topic           = var.kafka_topic
    # "$${...}" is an IoT substitution template, evaluated by IoT Core for each message:
    # get_secret() reads the SCRAM credentials at run time, so they are never in the rule.
    # The MQTT topic names the meter: one key per meter keeps each meter's readings in order.
    key = "$${topic()}"
    client_properties = {
      "bootstrap.servers"   = var.bootstrap_brokers_sasl_scram
      "security.protocol"   = "SASL_SSL"
      "sasl.mechanism"      = "SCRAM-SHA-512"
      "sasl.scram.username" = "$${get_secret('${var.scram_secret_name}', 'SecretString', 'username', '${aws_iam_role.rule.arn}')}"
      "sasl.scram.password" = "$${get_secret('${var.scram_secret_name}', 'SecretString', 'password', '${aws_iam_role.rule.arn}')}"
      "acks"                = "all"
      "key.serializer"      = "org.apache.kafka.common.serialization.StringSerializer"
      "value.serializer"    = "org.apache.kafka.common.serialization.ByteBufferSerializer"
      "compression.type"    = "lz4"
    }
    header {
      key   = "mqtt_topic"
      value = "$${topic()}"
    }
    header {
      key   = "received_at_ms"
      value = "$${timestamp()}"
    }
  }

  error_action {
    cloudwatch_logs {
      log_group_name = aws_cloudwatch_log_group.rule_errors.name
      role_arn       = aws_iam_role.rule.arn
    }
  }

  tags = var.tags
}
