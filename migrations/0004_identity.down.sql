drop index face_identity_idx;
alter table face drop column identity_similarity, drop column identity_pk;
drop table identity_embedding;
drop table identity;
