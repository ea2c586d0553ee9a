terraform {
  required_version = ">= 1.6.0"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.100.0, < 6.0.0"
    }
  }

  # Remote state per environment; bucket/table are passed with -backend-config at init.
  backend "s3" {
    key     = "energy/production/terraform.tfstate"
    encrypt = true
  }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = {
      project     = "energy-platform"
      environment = "production"
    }
  }
}
