output "cluster_arn" {
  description = "ARN of the MSK cluster"
  value       = aws_msk_cluster.this.arn
}

output "bootstrap_brokers_sasl_iam" {
  description = "Bootstrap servers for IAM-authenticated clients (ENERGY_KAFKA__BOOTSTRAP_SERVERS)"
  value       = aws_msk_cluster.this.bootstrap_brokers_sasl_iam
}

output "bootstrap_brokers_sasl_scram" {
  description = "Bootstrap servers for SCRAM-authenticated clients (IoT Core rule)"
  value       = aws_msk_cluster.this.bootstrap_brokers_sasl_scram
}

output "security_group_id" {
  description = "Security group of the brokers"
  value       = aws_security_group.brokers.id
}

output "topics" {
  description = "Topics to create with their partitions and retention"
  value       = var.topics
}

output "reliability" {
  description = "Resolved high-availability and durability settings (asserted by terraform test)"
  value = {
    broker_count      = aws_msk_cluster.this.number_of_broker_nodes
    server_properties = local.server_properties
    client_broker     = aws_msk_cluster.this.encryption_info[0].encryption_in_transit[0].client_broker
    in_cluster_tls    = aws_msk_cluster.this.encryption_info[0].encryption_in_transit[0].in_cluster
    unauthenticated   = aws_msk_cluster.this.client_authentication[0].unauthenticated
    client_subnets    = length(var.subnet_ids)
  }
}
