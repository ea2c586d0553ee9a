# Staging: the same highly available shape as production (so failovers can be rehearsed),
# on smaller instances and with one NAT gateway.
module "platform" {
  source = "../../modules/platform"

  environment        = "staging"
  vpc_cidr_block     = "10.41.0.0/16"
  single_nat_gateway = true

  msk_broker_instance_type  = "kafka.t3.small"
  msk_broker_volume_gb      = 100
  rds_instance_class        = "db.t4g.medium"
  rds_backup_retention_days = 7
  influxdb_instance_type    = "db.influx.medium"
  redis_node_type           = "cache.t4g.small"

  eks_node_groups = {
    general = {
      instance_types = ["m7g.large"]
      capacity_type  = "ON_DEMAND"
      min_size       = 3
      desired_size   = 3
      max_size       = 6
      disk_gb        = 50
    }
  }

  runbook_base_url = var.runbook_base_url
}
