#!/usr/bin/env bash
# Create the two instance profiles that cluster/aws.yaml names, for one bucket, with the AWS CLI:
#
#   cluster/aws-iam/create-roles.sh YOUR-BUCKET
#
#   restoration-ray-head    S3 on the bucket (s3-data.json) + launching/terminating the cluster's
#                           nodes (ray-autoscaler.json): the autoscaler runs on the head.
#   restoration-ray-worker  S3 on the bucket only.
#
# The identity running it needs iam:CreateRole, iam:PutRolePolicy, iam:CreateInstanceProfile,
# iam:AddRoleToInstanceProfile. The identity running `ray up` needs ray-autoscaler.json itself.
# Re-running it updates the policies; existing roles and profiles are kept.
set -euo pipefail

if [[ $# -ne 1 || "$1" == -* ]]; then
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
bucket="${1#s3://}"
bucket="${bucket%%/*}"
dir="$(cd "$(dirname "$0")" && pwd)"
account="$(aws sts get-caller-identity --query Account --output text)"

render() {
    sed -e "s/YOUR-BUCKET/$bucket/g" -e "s/YOUR-ACCOUNT-ID/$account/g" "$dir/$1"
}

for role in restoration-ray-head restoration-ray-worker; do
    if ! aws iam get-role --role-name "$role" > /dev/null 2>&1; then
        aws iam create-role --role-name "$role" \
            --assume-role-policy-document "file://$dir/ec2-trust.json" > /dev/null
    fi
    aws iam put-role-policy --role-name "$role" --policy-name restoration-s3-data \
        --policy-document "$(render s3-data.json)"
    if ! aws iam get-instance-profile --instance-profile-name "$role" > /dev/null 2>&1; then
        aws iam create-instance-profile --instance-profile-name "$role" > /dev/null
        aws iam add-role-to-instance-profile --instance-profile-name "$role" --role-name "$role"
    fi
    echo "instance profile $role: S3 on s3://$bucket"
done
aws iam put-role-policy --role-name restoration-ray-head --policy-name restoration-ray-autoscaler \
    --policy-document "$(render ray-autoscaler.json)"
echo "instance profile restoration-ray-head: may launch and terminate the cluster's EC2 nodes"
