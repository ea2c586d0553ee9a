# The whole production platform of one environment, composed from the service modules.
# Environments (envs/staging, envs/production) differ only in the sizes passed in.
locals {
  name = "energy-${var.environment}"
  tags = merge(var.tags, {
    project     = "energy-platform"
    environment = var.environment
    managed-by  = "terraform"
  })
  day_ms = 24 * 3600 * 1000
  # Mirrors schemas/topics.py (tests/infra checks they agree), plus the raw topic the IoT rule
  # writes to.
  topics = {
    "meter-readings"     = { partitions = 6, retention_ms = 7 * local.day_ms }
    "meter-readings-dlq" = { partitions = 1, retention_ms = 30 * local.day_ms }
    "meter-readings-raw" = { partitions = 6, retention_ms = 3 * local.day_ms }
    "meter-late-windows" = { partitions = 3, retention_ms = 30 * local.day_ms }
    "dr-events"          = { partitions = 3, retention_ms = 30 * local.day_ms }
    "bms-commands"       = { partitions = 3, retention_ms = 30 * local.day_ms }
    "bms-commands-dlq"   = { partitions = 1, retention_ms = 30 * local.day_ms }
    "forecasts"          = { partitions = 3, retention_ms = 7 * local.day_ms }
  }
}

module "kms" {
  source = "../kms"
  name   = local.name
  tags   = local.tags
}

module "vpc" {
  source             = "../vpc"
  name               = local.name
  cidr_block         = var.vpc_cidr_block
  az_count           = 3
  single_nat_gateway = var.single_nat_gateway
  kms_key_arn        = module.kms.key_arn
  tags               = local.tags
}

locals {
  # The application subnets (EKS pods) are the only clients of the data stores. Computed from
  # the VPC CIDR like the vpc module does, so for_each keys are known at plan time.
  app_cidrs = [for i in range(3) : cidrsubnet(var.vpc_cidr_block, 4, i + 4)]
}

module "secrets" {
  source      = "../secrets"
  name        = local.name
  kms_key_arn = module.kms.key_arn
  tags        = local.tags
}

module "msk" {
  source               = "../msk"
  name                 = local.name
  broker_count         = 3
  broker_instance_type = var.msk_broker_instance_type
  broker_volume_gb     = var.msk_broker_volume_gb
  topics               = local.topics
  vpc_id               = module.vpc.vpc_id
  vpc_cidr_block       = module.vpc.vpc_cidr_block
  subnet_ids           = module.vpc.private_subnet_ids
  kms_key_arn          = module.kms.key_arn
  scram_secret_arns    = [module.secrets.msk_scram_secret_arn, module.secrets.msk_scram_services_secret_arn]
  tags                 = local.tags
}

module "rds" {
  source                 = "../rds"
  name                   = local.name
  instance_class         = var.rds_instance_class
  replica_instance_class = var.rds_instance_class
  read_replica_count     = 1
  backup_retention_days  = var.rds_backup_retention_days
  vpc_id                 = module.vpc.vpc_id
  subnet_ids             = module.vpc.data_subnet_ids
  allowed_cidr_blocks    = local.app_cidrs
  kms_key_arn            = module.kms.key_arn
  tags                   = local.tags
}

module "influxdb" {
  source              = "../timestream_influxdb"
  name                = local.name
  instance_type       = var.influxdb_instance_type
  vpc_id              = module.vpc.vpc_id
  subnet_ids          = module.vpc.data_subnet_ids
  allowed_cidr_blocks = local.app_cidrs
  kms_key_arn         = module.kms.key_arn
  tags                = local.tags
}

module "redis" {
  source              = "../elasticache"
  name                = local.name
  node_type           = var.redis_node_type
  node_count          = 3
  azs                 = module.vpc.azs
  vpc_id              = module.vpc.vpc_id
  subnet_ids          = module.vpc.data_subnet_ids
  allowed_cidr_blocks = local.app_cidrs
  kms_key_arn         = module.kms.key_arn
  tags                = local.tags
}

module "eks" {
  source             = "../eks"
  name               = local.name
  kubernetes_version = var.kubernetes_version
  vpc_id             = module.vpc.vpc_id
  vpc_cidr_block     = module.vpc.vpc_cidr_block
  subnet_ids         = module.vpc.private_subnet_ids
  node_groups        = var.eks_node_groups
  kms_key_arn        = module.kms.key_arn
  tags               = local.tags
}

module "iot" {
  source                       = "../iot"
  name                         = local.name
  mqtt_topic_filter            = "meters/#"
  kafka_topic                  = "meter-readings-raw"
  bootstrap_brokers_sasl_scram = module.msk.bootstrap_brokers_sasl_scram
  scram_secret_arn             = module.secrets.msk_scram_secret_arn
  scram_secret_name            = module.secrets.msk_scram_secret_name
  vpc_id                       = module.vpc.vpc_id
  vpc_cidr_block               = module.vpc.vpc_cidr_block
  subnet_ids                   = module.vpc.private_subnet_ids
  kms_key_arn                  = module.kms.key_arn
  tags                         = local.tags
}

module "s3" {
  source      = "../s3"
  name        = local.name
  kms_key_arn = module.kms.key_arn
  tags        = local.tags
}

module "alarms" {
  source                     = "../alarms"
  name                       = local.name
  msk_cluster_name           = local.name
  msk_broker_count           = 3
  rds_primary_identifier     = module.rds.identifier
  rds_replica_identifiers    = module.rds.replica_identifiers
  redis_replication_group_id = module.redis.replication_group_id
  redis_node_count           = 3
  iot_rule_name              = module.iot.topic_rule_name
  runbook_base_url           = var.runbook_base_url
  kms_key_arn                = module.kms.key_arn
  tags                       = local.tags
}
