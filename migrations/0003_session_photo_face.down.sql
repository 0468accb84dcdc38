drop table face;
drop table photo;
drop table session;
