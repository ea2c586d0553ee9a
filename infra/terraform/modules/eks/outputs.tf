output "cluster_name" {
  description = "Name of the EKS cluster"
  value       = aws_eks_cluster.this.name
}

output "cluster_endpoint" {
  description = "Private API endpoint"
  value       = aws_eks_cluster.this.endpoint
}

output "oidc_provider_arn" {
  description = "OIDC provider for IAM roles for service accounts"
  value       = aws_iam_openid_connect_provider.this.arn
}

output "node_role_arn" {
  description = "IAM role of the managed nodes"
  value       = aws_iam_role.node.arn
}

output "reliability" {
  description = "Resolved cluster settings (asserted by terraform test)"
  value = {
    public_endpoint = aws_eks_cluster.this.vpc_config[0].endpoint_public_access
    min_nodes       = { for k, g in aws_eks_node_group.this : k => g.scaling_config[0].min_size }
  }
}
